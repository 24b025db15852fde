/*
 * chgsnap.h - the users' change counts kept across a clean stop.
 *
 * mstored counts the changes of each user's mail, and of each mailbox,
 * in memory (ops.c, "USER_WATCH"); a client keeps a count with the epoch
 * it came with and asks nothing while the count stays.  A clean stop writes the counts to
 * <index dir>/changes; the next start takes them (and the epoch) back
 * only if the log is exactly where it was (same store, same timeline,
 * same last record) and the file is in the directory that wrote it.
 * Any other start draws a new epoch, as a first start does.  The format
 * is in docs/format.md ("Change counts").
 *
 * DIAGNOSTICS: return codes with *error_r; nothing is logged.
 */
#ifndef MS_CHGSNAP_H
#define MS_CHGSNAP_H

#include <stddef.h>
#include <stdint.h>

#include "u64map.h"

#define MS_CHGSNAP_NAME "changes"
#define MS_CHGSNAP_TMP "changes.tmp"
/* magic, store id, 8 u64 fields; then the users; (version 3) the
   number of mailboxes and the mailboxes; then the checksum */
#define MS_CHGSNAP_HDR_SIZE (8 + 16 + 8 * 8)
#define MS_CHGSNAP_USER_SIZE 16
#define MS_CHGSNAP_MAX_USERS ((uint64_t)1 << 20)
#define MS_CHGSNAP_MAX_MBOXES ((uint64_t)1 << 20)

struct ms_chgsnap {
	uint8_t store_id[16];
	/* the (st_dev, st_ino) of the directory that wrote it, set by
	   ms_chgsnap_write: a copy of the directory (another site seeded
	   from this one) is not that one (ms_chgsnap_in) */
	uint64_t dir_dev, dir_ino;
	uint64_t timeline;	/* the log's when written */
	uint64_t seq;		/* the last record counted */
	uint64_t epoch;		/* != 0 */
	uint64_t chg_seq;	/* the largest count given */
	uint64_t chg_floor;	/* the count of a user not listed */
};

/* The file's bytes for s, users (user id -> count, as a pointer) and
   mboxes (mailbox id -> count; NULL: none): *buf_r malloc'ed, *len_r
   its size. */
void ms_chgsnap_encode(const struct ms_chgsnap *s,
		       const struct ms_u64map *users,
		       const struct ms_u64map *mboxes, uint8_t **buf_r,
		       size_t *len_r);
/* Check and read the bytes of a file into s, users and mboxes (empty on
   entry; mboxes NULL: checked, not kept): 0, or MS_ECORRUPT with
   *error_r (the maps then emptied).  A version 2 file has no mailboxes. */
int ms_chgsnap_decode(const uint8_t *buf, size_t len, struct ms_chgsnap *s,
		      struct ms_u64map *users, struct ms_u64map *mboxes,
		      const char **error_r);

/* Write dirfd/changes durably (a temporary file renamed over it), with
   dirfd's identity in place of s's dir_dev and dir_ino. */
int ms_chgsnap_write(int dirfd, const struct ms_chgsnap *s,
		     const struct ms_u64map *users,
		     const struct ms_u64map *mboxes, const char **error_r);
/* Read dirfd/changes: 1 read, 0 no such file, < 0 unreadable or not
   valid (error_r). */
int ms_chgsnap_read(int dirfd, struct ms_chgsnap *s, struct ms_u64map *users,
		    struct ms_u64map *mboxes, const char **error_r);
/* 1 if s was written in dirfd's directory itself, else 0 (also when
   dirfd cannot be looked at). */
int ms_chgsnap_in(int dirfd, const struct ms_chgsnap *s);

#endif
