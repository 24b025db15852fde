/*
 * msd.h - run a private mstored for a test: a scratch directory with its
 * own mstore.conf and sockets, start, stop (SIGTERM), kill -9, restart,
 * and connect as a user or as admin.  The daemon binary is
 * $MSTORE_BUILD/mstored (build/mstored by default).
 */
#ifndef MSD_H
#define MSD_H

#include <sys/types.h>

#include "client.h"

struct msd {
	char dir[1024];
	char conf[1100];
	char sock[1100];
	char asock[1100];
	char primary[1100], secondary[1100], index[1100];
	char logfile[1100];
	pid_t pid;
};

/* Make the directory and config; extra is appended to [store]. */
void msd_setup(struct msd *d, const char *tag, const char *extra);
/* Start and wait until the sockets answer (exits the test on failure). */
void msd_start(struct msd *d);
/* SIGTERM and wait; returns the exit status. */
int msd_stop(struct msd *d);
/* SIGKILL and wait. */
void msd_kill(struct msd *d);
/* Connect and say hello (user NULL: admin); exits the test on failure. */
struct ms_client *msd_connect(struct msd *d, const char *user);
/* Create a user through the admin socket; 0 or the error. */
int msd_user_add(struct msd *d, const char *user);

#endif
