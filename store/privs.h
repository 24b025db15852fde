/*
 * privs.h - dropping root, for the daemons (mstored, mstore-lmtpd,
 * udsync): they bind as root, give what they must keep writing to the
 * user, then become it for good.
 */
#ifndef MS_PRIVS_H
#define MS_PRIVS_H

#include <sys/types.h>

/*
 * When running as root and user is not NULL: look the user up, chown
 * each of the paths[0..n-1] that is not NULL (a socket or file; not
 * followed if a symlink), then drop groups, gid and uid, and check that
 * root cannot be regained.  0 (also when there was nothing to do), or -1
 * with the reason logged.
 */
int ms_privs_drop(const char *user, const char *const *paths, size_t n);
/*
 * chown path to uid:gid and, for a directory, what is in it down to
 * depth levels (a store copy: its root, log/ and lost+found/, their
 * files); symlinks are left alone and never followed.  0, or -1 with
 * errno set.  A path that does not exist is fine.
 */
int ms_privs_chown_tree(const char *path, uid_t uid, gid_t gid, int depth);
/* The user's ids: 0, or -1 with the reason logged. */
int ms_privs_lookup(const char *user, uid_t *uid_r, gid_t *gid_r);

#endif
