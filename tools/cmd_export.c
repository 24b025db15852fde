/*
 * cmd_export - `mstore [-c FILE] export [DIR] USER --maildir OUT |
 * --mbox FILE [--mailbox NAME] [--key KEYFILE]`: a user's mail, out of
 * the store, into Maildir++ or one mboxrd file.  Offline and read-only:
 * the log and the index are opened read-only, as `mstore stats
 * --offline` does, so it may run while mstored runs (it then exports the
 * state the index had committed when it started).
 *
 * Maildir++ (OUT must not exist or be empty): INBOX is OUT itself, every
 * other mailbox OUT/.NAME with the hierarchy separator '/' written as
 * '.', each name component in modified UTF-7 (RFC 3501, as Dovecot keeps
 * folder names), and a '.' or '\' inside a component written "\2e" or
 * "\5c" (the escapes of Dovecot's listescape plugin).  Messages go to
 * tmp/ and are renamed into cur/ as
 *   RECEIVED.M<uid>P<pid>V<uidvalidity>.mstore,S=<size>,W=<vsize>:2,FLAGS
 * with the flags D F R S T (draft, flagged, answered, seen, deleted) and
 * the keywords as letters a-z through a dovecot-keywords file (the first
 * 26 keywords of a mailbox; more are dropped and counted), the file's
 * mtime the received date, and a dovecot-uidlist keeping UIDs and
 * UIDVALIDITY, so that Dovecot (and its clients' caches) see the same
 * mailbox.
 *
 * mbox (FILE must not exist): the one mailbox --mailbox names (INBOX by
 * default), mboxrd: each message after "From MAILER-DAEMON <received
 * date in asctime form, UTC>", every line matching ^>*From  quoted with
 * one more '>', the bytes otherwise as stored (CRLF stays CRLF), a LF
 * added if the message does not end in one, then an empty line.  Flags
 * are not written (they would change the message's bytes).
 *
 * DIAGNOSTICS: a body that cannot be read (bad on both copies, failing
 * its own checks, or missing from the index) does not stop the export:
 * it is listed on stderr as "unreadable SEG:OFF mailbox NAME uid N:
 * why", and the exit status is 1.  0: everything exported; 2: could not
 * run (no store, no index, no such user, the output exists).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "body.h"
#include "event.h"
#include "idx.h"
#include "log.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

#define KW_MAX 26

struct mbox_ent {
	uint64_t id;
	char *name;
	uint32_t uidvalidity;
	uint64_t uidnext, messages;
};

struct exp {
	struct ms_log *log;
	struct ms_idx_rd *rd;
	struct ms_body_ctx bctx;
	struct ms_buf payload, plain;
	const char *maildir;
	FILE *mbox;
	uint64_t exported, unreadable, kw_dropped, done, total;
	/* the folder being written (maildir) */
	char folder[4096];
	char *kw[KW_MAX];
	size_t nkw;
	FILE *uidlist;
};

/* ---- names ---- */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* The next code point of valid UTF-8 (the store checked the names). */
static uint32_t utf8_next(const unsigned char **p, const unsigned char *end)
{
	const unsigned char *s = *p;
	uint32_t c = *s++;
	int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
	if (more)
		c &= 0x3fu >> more;
	while (more-- > 0 && s < end)
		c = (c << 6) | (*s++ & 0x3f);
	*p = s;
	return c;
}

/* One name component, modified UTF-7 plus the listescape escapes. */
static int put_component(FILE *o, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	while (p < end) {
		if (*p >= 0x20 && *p < 0x7f) {
			if (*p == '&')
				fputs("&-", o);
			else if (*p == '.')
				fputs("\\2e", o);
			else if (*p == '\\')
				fputs("\\5c", o);
			else
				fputc(*p, o);
			p++;
			continue;
		}
		/* a run of other characters: UTF-16BE in modified base64 */
		uint32_t bits = 0;
		int nbits = 0;
		fputc('&', o);
		while (p < end && !(*p >= 0x20 && *p < 0x7f)) {
			uint32_t c = utf8_next(&p, end);
			uint16_t u[2];
			int n = 1;
			if (c >= 0x10000) {
				c -= 0x10000;
				u[0] = (uint16_t)(0xd800 | (c >> 10));
				u[1] = (uint16_t)(0xdc00 | (c & 0x3ff));
				n = 2;
			} else {
				u[0] = (uint16_t)c;
			}
			for (int k = 0; k < n; k++) {
				bits = (bits << 16) | u[k];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					fputc(b64[(bits >> nbits) & 0x3f], o);
				}
			}
		}
		if (nbits > 0)
			fputc(b64[(bits << (6 - nbits)) & 0x3f], o);
		fputc('-', o);
	}
	return ferror(o) ? -1 : 0;
}

/* OUT or OUT/.a.b for the mailbox name ("/" separated). */
static void folder_path(const char *out, const char *name, char *dst,
			size_t dst_size)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *o = open_memstream(&buf, &blen);
	if (o == NULL)
		msg_fatal("oom");
	if (strcmp(name, "INBOX") == 0) {
		fputs(out, o);
	} else {
		fprintf(o, "%s/", out);
		const char *s = name;
		for (;;) {
			const char *slash = strchr(s, '/');
			size_t n = slash ? (size_t)(slash - s) : strlen(s);
			fputc('.', o);
			put_component(o, s, n);
			if (slash == NULL)
				break;
			s = slash + 1;
		}
	}
	fclose(o);
	snprintf(dst, dst_size, "%s", buf);
	free(buf);
}

/* ---- maildir ---- */

static int mkdir_p1(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "mstore export: mkdir %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	return 0;
}

static int folder_open(struct exp *e, const struct mbox_ent *mb)
{
	char p[4200];
	folder_path(e->maildir, mb->name, e->folder, sizeof(e->folder));
	if (mkdir_p1(e->folder) < 0)
		return -1;
	static const char *const subs[] = { "cur", "new", "tmp" };
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", e->folder, subs[i]);
		if (mkdir_p1(p) < 0)
			return -1;
	}
	if (strcmp(mb->name, "INBOX") != 0) {
		snprintf(p, sizeof(p), "%s/maildirfolder", e->folder);
		int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	snprintf(p, sizeof(p), "%s/dovecot-uidlist", e->folder);
	e->uidlist = fopen(p, "w");
	if (e->uidlist == NULL) {
		fprintf(stderr, "mstore export: %s: %s\n", p, strerror(errno));
		return -1;
	}
	fprintf(e->uidlist, "3 V%u N%" PRIu64 "\n", mb->uidvalidity,
		mb->uidnext);
	e->nkw = 0;
	return 0;
}

static int folder_close(struct exp *e)
{
	int ret = 0;
	if (e->uidlist != NULL && fclose(e->uidlist) != 0)
		ret = -1;
	e->uidlist = NULL;
	if (e->nkw > 0) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/dovecot-keywords", e->folder);
		FILE *f = fopen(p, "w");
		if (f == NULL)
			ret = -1;
		for (size_t i = 0; f != NULL && i < e->nkw; i++)
			fprintf(f, "%zu %s\n", i, e->kw[i]);
		if (f != NULL && fclose(f) != 0)
			ret = -1;
	}
	for (size_t i = 0; i < e->nkw; i++)
		free(e->kw[i]);
	e->nkw = 0;
	return ret;
}

/* The letter of a keyword in this folder, 0 if over the 26. */
static char kw_letter(struct exp *e, const char *kw, size_t len)
{
	for (size_t i = 0; i < e->nkw; i++)
		if (strlen(e->kw[i]) == len && memcmp(e->kw[i], kw, len) == 0)
			return (char)('a' + i);
	if (e->nkw == KW_MAX) {
		e->kw_dropped++;
		return 0;
	}
	e->kw[e->nkw] = ms_malloc(len + 1);
	memcpy(e->kw[e->nkw], kw, len);
	e->kw[e->nkw][len] = '\0';
	return (char)('a' + e->nkw++);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int maildir_put(struct exp *e, const struct ms_idx_msg *m,
		       uint32_t uidvalidity)
{
	char base[256], flags[64], tmp[4400], cur[4500];
	size_t nf = 0;
	static const struct {
		uint32_t bit;
		char c;
	} fl[] = { /* ASCII order */
		   { MS_EVENT_FLAG_DRAFT, 'D' },
		   { MS_EVENT_FLAG_FLAGGED, 'F' },
		   { MS_EVENT_FLAG_ANSWERED, 'R' },
		   { MS_EVENT_FLAG_SEEN, 'S' },
		   { MS_EVENT_FLAG_DELETED, 'T' } };
	for (size_t i = 0; i < MS_ARRAY_SIZE(fl); i++)
		if (m->flags & fl[i].bit)
			flags[nf++] = fl[i].c;
	/* the keyword letters go right after the flags */
	_Static_assert(MS_ARRAY_SIZE(fl) + KW_MAX < sizeof(flags),
		       "flags holds the flags, the keywords and a NUL");
	char *kws = flags + nf;
	size_t nk = 0, off = 0;
	const char *kw;
	size_t kl;
	while (ms_idx_msg_keyword(m, &off, &kw, &kl) > 0) {
		char c = kw_letter(e, kw, kl);
		if (c != 0 && memchr(kws, c, nk) == NULL)
			kws[nk++] = c;
	}
	/* letters in order */
	for (size_t i = 1; i < nk; i++)
		for (size_t j = i; j > 0 && kws[j - 1] > kws[j]; j--) {
			char t = kws[j];
			kws[j] = kws[j - 1];
			kws[j - 1] = t;
		}
	flags[nf + nk] = '\0';
	snprintf(base, sizeof(base),
		 "%" PRId64 ".M%uP%dV%u.mstore,S=%zu,W=%" PRIu64,
		 m->received_date, m->uid, (int)getpid(), uidvalidity,
		 e->plain.len, m->virtual_size);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s", e->folder, base);
	snprintf(cur, sizeof(cur), "%s/cur/%s:2,%s", e->folder, base, flags);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, e->plain.data, e->plain.len) < 0 ||
	    close(fd) < 0) {
		fprintf(stderr, "mstore export: %s: %s\n", tmp,
			strerror(errno));
		return -1;
	}
	struct utimbuf ut = { (time_t)m->received_date,
			      (time_t)m->received_date };
	(void)utime(tmp, &ut);
	if (rename(tmp, cur) < 0) {
		fprintf(stderr, "mstore export: rename %s: %s\n", tmp,
			strerror(errno));
		return -1;
	}
	fprintf(e->uidlist, "%u :%s\n", m->uid, base);
	return 0;
}

/* ---- mbox ---- */

static int mbox_put(struct exp *e, const struct ms_idx_msg *m)
{
	char date[64];
	time_t t = (time_t)m->received_date;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm) == 0)
		snprintf(date, sizeof(date), "Thu Jan  1 00:00:00 1970");
	fprintf(e->mbox, "From MAILER-DAEMON %s\n", date);
	const uint8_t *p = e->plain.data, *end = p + e->plain.len;
	while (p < end) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		const uint8_t *le = nl ? nl + 1 : end;
		const uint8_t *q = p;
		while (q < le && *q == '>')
			q++;
		if ((size_t)(le - q) >= 5 && memcmp(q, "From ", 5) == 0)
			fputc('>', e->mbox);
		fwrite(p, 1, (size_t)(le - p), e->mbox);
		p = le;
	}
	if (e->plain.len == 0 || e->plain.data[e->plain.len - 1] != '\n')
		fputc('\n', e->mbox);
	fputc('\n', e->mbox);
	return ferror(e->mbox) ? -1 : 0;
}

/* ---- the walk ---- */

static void unreadable(struct exp *e, struct ms_pos pos, const char *mbox,
		       uint32_t uid, const char *why)
{
	e->unreadable++;
	tool_progress_end();
	fprintf(stderr, "unreadable %" PRIu64 ":%" PRIu64 " mailbox %s uid %u: %s\n",
		pos.seg, pos.off, mbox, uid, why);
}

/* The body of m into e->plain: 0, 1 unreadable (reported), -1 fatal. */
static int read_body(struct exp *e, const struct mbox_ent *mb,
		     const struct ms_idx_msg *m)
{
	struct ms_idx_body b;
	struct ms_rec_hdr h;
	const char *err = "";
	int ret = ms_idx_body_get(e->rd, m->body_key, &b);
	if (ret < 0) {
		unreadable(e, m->place_pos, mb->name, m->uid,
			   ret == MS_ENOTFOUND
				   ? "the index has no body for this message "
				     "(position: its PLACE record)"
				   : "the index entry of its body is damaged "
				     "(position: its PLACE record)");
		return 1;
	}
	if (ms_log_read(e->log, b.pos, &h, &e->payload, &err) < 0) {
		unreadable(e, b.pos, mb->name, m->uid, err);
		return 1;
	}
	if (h.type != MS_REC_BODY) {
		unreadable(e, b.pos, mb->name, m->uid,
			   "the record there is not a body");
		return 1;
	}
	if (ms_body_decode(&e->bctx, h.flags, e->payload.data, e->payload.len,
			   &e->plain, &err) < 0) {
		unreadable(e, b.pos, mb->name, m->uid, err);
		return 1;
	}
	return 0;
}

static int export_mailbox(struct exp *e, const struct mbox_ent *mb)
{
	struct ms_idx_iter *it;
	struct ms_idx_msg m;
	int ret;

	if (e->maildir != NULL && folder_open(e, mb) < 0)
		return -1;
	ret = ms_idx_msgs_iter(e->rd, mb->id, 1, UINT32_MAX, &it);
	while (ret == 0 && (ret = ms_idx_msgs_next(it, &m)) > 0) {
		ret = 0;
		tool_progress("export", ++e->done, e->total);
		int r = read_body(e, mb, &m);
		if (r > 0)
			continue;
		if (e->maildir != NULL)
			r = maildir_put(e, &m, mb->uidvalidity);
		else
			r = mbox_put(e, &m);
		if (r < 0) {
			ret = -1;
			break;
		}
		e->exported++;
	}
	if (ret != 0 && ret != -1) {
		/* the index could not be walked further: say so, go on */
		unreadable(e, (struct ms_pos){ 0, 0 }, mb->name, 0,
			   ms_errf("the index's messages of this mailbox: %s",
				   ms_strerror(ret)));
		ret = 0;
	}
	ms_idx_iter_free(&it);
	if (e->maildir != NULL && folder_close(e) < 0 && ret == 0)
		ret = -1;
	return ret;
}

static int cmp_mbox(const void *a, const void *b)
{
	const struct mbox_ent *x = a, *y = b;
	int xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
	if (xi != yi)
		return yi - xi;
	return strcmp(x->name, y->name);
}

static int out_ok(const char *maildir, const char *mbox)
{
	struct stat st;
	if (mbox != NULL) {
		if (lstat(mbox, &st) == 0) {
			fprintf(stderr, "mstore export: %s exists; not "
					"overwriting it\n",
				mbox);
			return -1;
		}
		return 0;
	}
	if (mkdir(maildir, 0700) == 0)
		return 0;
	if (errno == EEXIST && rmdir(maildir) == 0 && mkdir(maildir, 0700) == 0)
		return 0; /* it was an empty directory */
	fprintf(stderr, "mstore export: %s exists and is not an empty "
			"directory\n",
		maildir);
	return -1;
}

int cmd_export(int argc, char **argv)
{
	const char *pos[2] = { NULL, NULL }, *maildir = NULL, *mboxf = NULL;
	const char *only = NULL, *keyfile = NULL, *secondary = NULL;
	const char *idxopt = NULL, *err = "";
	struct tool_store ts;
	struct exp e = { 0 };
	struct mbox_ent *mbs = NULL;
	size_t nmbs = 0, npos = 0;
	uint8_t key[32];
	int ret = TOOL_FAILED;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--maildir") == 0 && i + 1 < argc)
			maildir = argv[++i];
		else if (strcmp(argv[i], "--mbox") == 0 && i + 1 < argc)
			mboxf = argv[++i];
		else if (strcmp(argv[i], "--mailbox") == 0 && i + 1 < argc)
			only = argv[++i];
		else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
			keyfile = argv[++i];
		else if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (strcmp(argv[i], "--index") == 0 && i + 1 < argc)
			idxopt = argv[++i];
		else if (argv[i][0] != '-' && npos < 2)
			pos[npos++] = argv[i];
		else
			goto usage;
	}
	if ((maildir == NULL) == (mboxf == NULL) || npos == 0)
		goto usage;
	const char *dir = npos == 2 ? pos[0] : NULL;
	const char *user = npos == 2 ? pos[1] : pos[0];
	if (mboxf != NULL && only == NULL)
		only = "INBOX";
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	const struct ms_store_cfg *cfg = tool_cfg();
	if (keyfile == NULL && cfg != NULL)
		keyfile = cfg->key_file;
	if (keyfile != NULL && ms_body_key_load(keyfile, key, &err) < 0) {
		fprintf(stderr, "mstore export: %s\n", err);
		return TOOL_FAILED;
	}
	char idxdir[4200], data[4300];
	struct stat sb;
	if (idxopt != NULL)
		snprintf(idxdir, sizeof(idxdir), "%s", idxopt);
	else if (dir == NULL && cfg != NULL && cfg->index != NULL)
		snprintf(idxdir, sizeof(idxdir), "%s", cfg->index);
	else
		snprintf(idxdir, sizeof(idxdir), "%s/index", ts.primary);
	snprintf(data, sizeof(data), "%s/data.mdb", idxdir);
	if (stat(data, &sb) < 0) {
		fprintf(stderr, "mstore export: no index at %s (mstore reindex "
				"builds it from the log)\n",
			idxdir);
		return TOOL_FAILED;
	}
	ms_msg_set_level(MS_MSG_ERROR);
	struct ms_log_cfg lc = { .dir = { ts.copy[0], ts.copy[1] },
				 .engine = MS_IO_PSYNC,
				 .readonly = 1 };
	struct ms_idx *idx = NULL;
	if (ms_log_open(&lc, &e.log, &err) < 0) {
		fprintf(stderr, "mstore export: %s\n", err);
		return TOOL_FAILED;
	}
	if (ms_idx_open(idxdir, 0, &idx, &err) < 0 ||
	    ms_idx_read_begin(idx, &e.rd) < 0) {
		fprintf(stderr, "mstore export: index %s: %s\n", idxdir,
			idx ? "cannot read it" : err);
		goto out;
	}
	const struct ms_meta *meta = ms_log_meta(e.log);
	ms_body_ctx_init(&e.bctx, meta->store_id, meta->salt,
			 keyfile ? key : NULL, 0);
	ms_buf_init(&e.payload, MS_REC_MAX_PAYLOAD);
	ms_buf_init(&e.plain, MS_BODY_MAX_PLAIN);

	struct ms_idx_user u;
	if (ms_idx_user_by_name(e.rd, user, strlen(user), &u) < 0) {
		fprintf(stderr, "mstore export: no such user: %s\n", user);
		goto out;
	}
	struct ms_idx_iter *it;
	struct ms_idx_mbox m;
	int r = ms_idx_mboxes_iter(e.rd, u.id, &it);
	while (r == 0 && (r = ms_idx_mboxes_next(it, &m)) > 0) {
		r = 0;
		if (only != NULL && (strlen(only) != m.name_len ||
				     memcmp(only, m.name, m.name_len) != 0))
			continue;
		mbs = ms_realloc(mbs, (nmbs + 1) * sizeof(*mbs));
		mbs[nmbs] = (struct mbox_ent){ m.id, NULL, m.uidvalidity,
					       m.uidnext, m.messages };
		mbs[nmbs].name = ms_malloc(m.name_len + 1);
		memcpy(mbs[nmbs].name, m.name, m.name_len);
		mbs[nmbs].name[m.name_len] = '\0';
		e.total += m.messages;
		nmbs++;
	}
	ms_idx_iter_free(&it);
	if (r < 0) {
		e.unreadable++;
		fprintf(stderr, "unreadable: the index's mailboxes of %s: %s "
				"(exporting the ones read)\n",
			user, ms_strerror(r));
	}
	if (only != NULL && nmbs == 0) {
		fprintf(stderr, "mstore export: %s has no mailbox %s\n", user,
			only);
		goto out;
	}
	if (nmbs > 1)
		qsort(mbs, nmbs, sizeof(*mbs), cmp_mbox);
	if (out_ok(maildir, mboxf) < 0)
		goto out;
	e.maildir = maildir;
	if (mboxf != NULL) {
		e.mbox = fopen(mboxf, "wx");
		if (e.mbox == NULL) {
			fprintf(stderr, "mstore export: %s: %s\n", mboxf,
				strerror(errno));
			goto out;
		}
	}
	ret = TOOL_OK;
	for (size_t i = 0; i < nmbs && ret == TOOL_OK; i++)
		if (export_mailbox(&e, &mbs[i]) < 0)
			ret = TOOL_FAILED;
	if (e.mbox != NULL && fclose(e.mbox) != 0) {
		fprintf(stderr, "mstore export: writing %s failed\n", mboxf);
		ret = TOOL_FAILED;
	}
	e.mbox = NULL;
	tool_progress_end();
	printf("exported %" PRIu64 " messages of %s from %zu mailboxes to %s"
	       "; %" PRIu64 " unreadable\n",
	       e.exported, user, nmbs, maildir ? maildir : mboxf,
	       e.unreadable);
	if (e.kw_dropped > 0)
		fprintf(stderr, "mstore export: %" PRIu64 " keywords dropped "
				"(over 26 in a mailbox)\n",
			e.kw_dropped);
	if (ret == TOOL_OK && e.unreadable > 0)
		ret = TOOL_PROBLEMS;
out:
	for (size_t i = 0; i < nmbs; i++)
		free(mbs[i].name);
	free(mbs);
	if (e.mbox != NULL)
		fclose(e.mbox);
	if (e.rd != NULL)
		ms_idx_read_end(&e.rd);
	if (idx != NULL)
		ms_idx_close(&idx);
	ms_buf_free(&e.payload);
	ms_buf_free(&e.plain);
	ms_body_ctx_wipe(&e.bctx);
	ms_log_close(&e.log);
	return ret;
usage:
	fprintf(stderr, "usage: mstore [-c FILE] export [DIR] USER --maildir "
			"OUT | --mbox FILE [--mailbox NAME] [--key KEYFILE] "
			"[--secondary DIR2] [--index IDXDIR]\n");
	return TOOL_FAILED;
}
