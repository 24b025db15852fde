/*
 * msd_cm.h - cmocka helpers around a private mstored (msd_cm.c).
 */
#ifndef MSD_CM_H
#define MSD_CM_H

#include "client.h"

/* A request; fails the test on a transport error, else the status. */
int msd_req(struct ms_client *c, struct ms_req *q, struct ms_reply *rep);
/* Append body to one mailbox of the session's user; the result. */
struct ms_append_result msd_append1(struct ms_client *c, const char *mbox,
				    const void *body, size_t len,
				    uint32_t flags);
/* MBOX_STATUS (must succeed). */
struct ms_mbox_info msd_mbox_status(struct ms_client *c, const char *mbox);
/* A STATUS counter by name (must exist). */
uint64_t msd_counter(struct ms_client *c, const char *key);
/* ms_idx_dump of the index in dir, as a string (free it). */
char *msd_index_dump(const char *dir);

#endif
