/*
 * privs.c - see privs.h.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "msg.h"
#include "privs.h"

int ms_privs_lookup(const char *user, uid_t *uid_r, gid_t *gid_r)
{
	struct passwd *pw = getpwnam(user);
	if (pw == NULL) {
		msg_error("privs.failed user=%s error=\"no such user\"",
			  msg_q(user));
		return -1;
	}
	*uid_r = pw->pw_uid;
	*gid_r = pw->pw_gid;
	return 0;
}

int ms_privs_chown_tree(const char *path, uid_t uid, gid_t gid, int depth)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (S_ISLNK(st.st_mode))
		return 0; /* never follow a link as root */
	if ((st.st_uid != uid || st.st_gid != gid) &&
	    lchown(path, uid, gid) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode) || depth == 0)
		return 0;
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	struct dirent *de;
	int ret = 0;
	while (ret == 0 && (de = readdir(d)) != NULL) {
		char sub[4200];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >=
		    (int)sizeof(sub)) {
			errno = ENAMETOOLONG;
			ret = -1;
			break;
		}
		ret = ms_privs_chown_tree(sub, uid, gid, depth - 1);
	}
	int saved = errno;
	closedir(d);
	errno = saved;
	return ret;
}

int ms_privs_drop(const char *user, const char *const *paths, size_t n)
{
	uid_t uid;
	gid_t gid;

	if (user == NULL || getuid() != 0)
		return 0;
	if (ms_privs_lookup(user, &uid, &gid) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (paths[i] != NULL && lchown(paths[i], uid, gid) < 0) {
			msg_error("chown.failed path=%s user=%s error=%s",
				  msg_q(paths[i]), msg_q(user),
				  msg_q(strerror(errno)));
			return -1;
		}
	}
	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		msg_error("privs.failed user=%s error=%s", msg_q(user),
			  msg_q(strerror(errno)));
		return -1;
	}
	if (setuid(0) == 0) {
		msg_error("privs.failed user=%s error=\"could regain root\"",
			  msg_q(user));
		return -1;
	}
	msg_info("privs.dropped user=%s uid=%u", msg_q(user), (unsigned)uid);
	return 0;
}
