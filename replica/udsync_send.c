/*
 * udsync_send.c - udsync send, at the primary site: follow the committed
 * log and stream it to udsync recv (docs/replication.md).
 *
 * mstored says where the durable end is (REPL_WAIT, admin socket); only
 * bytes before it are ever read, from the segment files of the primary
 * copy (read-only, as mstore verify does), each record checked and read
 * from the secondary copy when the primary's is bad.  A segment's file
 * is opened once while it is sent, so a compaction that renames a new
 * version into place mid-way is not mixed into it.  The DR site's acks
 * go back to mstored (REPL_ACK): sync mode, lag, status.  Any failure
 * ends the session; the next one resumes from the receiver's durable
 * position.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "proto.h"
#include "store_cfg.h"
#include "udsync.h"

struct feed {			/* mstored's admin socket */
	int fd;
	struct ms_buf in;
	uint32_t id;
	int wait_out;		/* a REPL_WAIT is outstanding */
	struct ms_pos durable;
	uint64_t durable_seq;
};

struct sender {
	struct ms_store_cfg scfg;
	struct udsync_cfg ucfg;
	struct udsync_keys keys;
	struct ms_meta meta;
	int root_fd[2];
	struct feed feed;
	/* the segment being read */
	uint64_t rseg;
	int rfd[2];
	struct ms_buf chunk;
	/* window: end positions of DATA sent, not acked */
	struct { struct ms_pos end; uint64_t bytes; } *win;
	size_t nwin, capwin;
	uint64_t win_bytes;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- mstored's feed ---- */

static int feed_send(struct feed *f, const struct ms_req *q,
		     const char **error_r)
{
	struct ms_buf b;
	int ret;
	ms_buf_init(&b, 0);
	if ((ret = ms_req_encode(&b, ++f->id, q, error_r)) == 0) {
		size_t done = 0;
		while (done < b.len) {
			ssize_t n = send(f->fd, b.data + done, b.len - done,
					 MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				ret = -errno;
				*error_r = ms_errf("mstored: send: %s",
						   strerror(errno));
				break;
			}
			done += (size_t)n;
		}
	}
	ms_buf_free(&b);
	return ret;
}

/* Read what is there; handle whole replies.  block: wait for one. */
static int feed_read(struct feed *f, int block, const char **error_r)
{
	for (;;) {
		struct ms_proto_hdr h;
		size_t need;
		int ret = ms_proto_frame(f->in.data, f->in.len, 0, &h, &need,
					 error_r);
		if (ret == 0) {
			struct ms_reply rep;
			size_t take = MS_PROTO_HDR_SIZE + h.body_len;
			ret = ms_reply_decode(h.op, h.body, h.body_len, &rep,
					      error_r);
			if (ret == 0 && rep.status < 0) {
				msg_warn("store.refused op=%s error=%s",
					 ms_op_name(h.op),
					 msg_q(ms_errf("%.*s",
						(int)rep.reason.len,
						rep.reason.s)));
			} else if (ret == 0 &&
				   ((h.op & ~MS_OP_REPLY) == MS_OP_REPL_WAIT ||
				    (h.op & ~MS_OP_REPLY) == MS_OP_REPL_ACK)) {
				struct ms_pos d = { rep.u.repl.seg,
						    rep.u.repl.off };
				if (ms_pos_cmp(d, f->durable) > 0) {
					f->durable = d;
					f->durable_seq = rep.u.repl.seq;
				}
			}
			if ((h.op & ~MS_OP_REPLY) == MS_OP_REPL_WAIT)
				f->wait_out = 0;
			memmove(f->in.data, f->in.data + take, f->in.len - take);
			f->in.len -= take;
			if (ret < 0)
				return ret;
			block = 0;
			continue;
		}
		if (ret != MS_ETRUNC)
			return ret;
		struct pollfd p = { f->fd, POLLIN, 0 };
		int r = poll(&p, 1, block ? 10000 : 0);
		if (r == 0 && block) {
			*error_r = "mstored did not answer";
			return -ETIMEDOUT;
		}
		if (r <= 0)
			return 0;
		if (ms_buf_reserve(&f->in, 65536) < 0)
			return MS_ETOOBIG;
		ssize_t n = recv(f->fd, f->in.data + f->in.len,
				 f->in.cap - f->in.len, MSG_DONTWAIT);
		if (n == 0) {
			*error_r = "mstored closed the admin connection";
			return -ECONNRESET;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			*error_r = ms_errf("mstored: recv: %s", strerror(errno));
			return -errno;
		}
		if (n > 0)
			f->in.len += (size_t)n;
	}
}

static int feed_open(struct feed *f, const char *path, const char **error_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ms_req q = { .op = MS_OP_HELLO };
	int ret;

	f->fd = -1;
	f->wait_out = 0;
	ms_buf_reset(&f->in);
	if (strlen(path) >= sizeof(sa.sun_path)) {
		*error_r = "admin socket path too long";
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	f->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->fd < 0 || connect(f->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		*error_r = ms_errf("mstored at %s: %s", path, strerror(errno));
		ret = -errno;
		if (f->fd >= 0)
			close(f->fd);
		f->fd = -1;
		return ret;
	}
	q.u.hello.version = MS_PROTO_VERSION;
	q.u.hello.role = MS_ROLE_ADMIN;
	if ((ret = feed_send(f, &q, error_r)) < 0 ||
	    (ret = feed_read(f, 1, error_r)) < 0)
		return ret;
	/* where the durable end is now */
	q = (struct ms_req){ .op = MS_OP_REPL_WAIT };
	f->wait_out = 1;
	if ((ret = feed_send(f, &q, error_r)) < 0)
		return ret;
	while (f->wait_out)
		if ((ret = feed_read(f, 1, error_r)) < 0)
			return ret;
	return 0;
}

static void feed_close(struct feed *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

/* ---- reading the primary's segments ---- */

static void seg_close(struct sender *s)
{
	for (int c = 0; c < 2; c++) {
		if (s->rfd[c] >= 0)
			close(s->rfd[c]);
		s->rfd[c] = -1;
	}
	s->rseg = 0;
}

static int seg_open(struct sender *s, uint64_t seg, const char **error_r)
{
	char name[MS_SEG_NAME_LEN + 8];
	if (s->rseg == seg)
		return 0;
	seg_close(s);
	memcpy(name, "log/", sizeof("log/")); /* and its NUL */
	ms_seg_name(seg, name + 4);
	for (int c = 0; c < 2; c++)
		s->rfd[c] = openat(s->root_fd[c], name, O_RDONLY | O_CLOEXEC);
	if (s->rfd[0] < 0 && s->rfd[1] < 0) {
		*error_r = ms_errf("segment %s: %s", name + 4, strerror(errno));
		return -errno;
	}
	s->rseg = seg;
	return 0;
}

/* Check one unit (header at 0, else a record) at p; its size, or <0. */
static long long unit_check(const uint8_t *p, size_t avail, uint64_t off,
			    const char **error_r)
{
	if (off == 0) {
		struct ms_seg_hdr sh;
		if (avail < MS_SEG_HDR_SIZE)
			return MS_ETRUNC;
		int r = ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &sh, error_r);
		return r < 0 ? r : MS_SEG_HDR_SIZE;
	}
	struct ms_rec_hdr h;
	if (avail < MS_REC_HDR_SIZE)
		return MS_ETRUNC;
	int r = ms_rec_check_hdr(p, &h, error_r);
	if (r < 0)
		return r;
	if (avail < MS_REC_HDR_SIZE + (size_t)h.len)
		return MS_ETRUNC;
	r = h.type == MS_REC_HOLE
		    ? ms_rec_check_sum(p, NULL, 0, error_r)
		    : ms_rec_check_sum(p, p + MS_REC_HDR_SIZE, h.len, error_r);
	return r < 0 ? r : (long long)(MS_REC_HDR_SIZE + h.len);
}

/* Read [off, off+want) of copy c, at most the file. */
static int read_copy(struct sender *s, int c, uint64_t off, size_t want,
		     struct ms_buf *b)
{
	if (s->rfd[c] < 0)
		return -ENOENT;
	ms_buf_reset(b);
	if (ms_buf_resize(b, want) < 0)
		return MS_ETOOBIG;
	ssize_t n = pread(s->rfd[c], b->data, want, (off_t)off);
	if (n < 0)
		return -errno;
	b->len = (size_t)n;
	return 0;
}

/*
 * The next bytes to send from cur, whole checked units, at most
 * UDSYNC_MAX_DATA (a larger record comes whole, sent in pieces).
 * 0 with s->chunk filled (maybe empty: nothing to send yet).
 */
static int next_chunk(struct sender *s, struct ms_pos *cur,
		      const char **error_r)
{
	struct feed *f = &s->feed;
	struct stat sb;
	int ret;

	ms_buf_reset(&s->chunk);
	for (;;) {
		if (ms_pos_cmp(*cur, f->durable) >= 0 && cur->seg >= f->durable.seg)
			return 0;
		if ((ret = seg_open(s, cur->seg, error_r)) < 0)
			return ret;
		uint64_t limit;
		if (cur->seg < f->durable.seg) {
			/* sealed: its size is final */
			if (fstat(s->rfd[s->rfd[0] >= 0 ? 0 : 1], &sb) < 0)
				return -errno;
			limit = (uint64_t)sb.st_size;
		} else {
			limit = f->durable.off;
		}
		if (cur->off >= limit) {
			if (cur->seg < f->durable.seg) {
				*cur = (struct ms_pos){ cur->seg + 1, 0 };
				continue;
			}
			return 0;
		}
		size_t want = limit - cur->off > UDSYNC_MAX_DATA
				      ? UDSYNC_MAX_DATA
				      : (size_t)(limit - cur->off);
		break_out:;
		struct ms_buf alt;
		ms_buf_init(&alt, 0);
		ret = read_copy(s, 0, cur->off, want, &s->chunk);
		if (ret < 0)
			ms_buf_reset(&s->chunk);
		size_t good = 0;
		uint64_t off = cur->off;
		while (good < s->chunk.len) {
			const char *why = "";
			long long u = unit_check(s->chunk.data + good,
						 s->chunk.len - good, off, &why);
			if (u == MS_ETRUNC)
				break;
			if (u < 0) {
				if (good > 0)
					break; /* send the good part first */
				/* bad on the primary copy: the secondary's */
				msg_warn("read.failed copy=primary segment=%llu "
					 "offset=%llu error=%s "
					 "msg=\"reading the secondary\"",
					 (unsigned long long)cur->seg,
					 (unsigned long long)off, msg_q(why));
				ms_buf_reset(&s->chunk);
				ret = read_copy(s, 1, off, want, &alt);
				long long u2 = ret < 0 ? ret
						       : unit_check(alt.data,
								    alt.len, off,
								    &why);
				if (u2 < 0) {
					*error_r = ms_errf(
						"segment %llu offset %llu is "
						"bad on both copies: %s",
						(unsigned long long)cur->seg,
						(unsigned long long)off, why);
					ms_buf_free(&alt);
					return MS_ECORRUPT;
				}
				ms_buf_append(&s->chunk, alt.data, (size_t)u2);
				good = (size_t)u2;
				break;
			}
			good += (size_t)u;
			off += (uint64_t)u;
		}
		ms_buf_free(&alt);
		if (good == 0 && s->chunk.len > 0 && want < limit - cur->off + 1 &&
		    want == UDSYNC_MAX_DATA) {
			/* one record larger than a DATA: read it whole */
			struct ms_rec_hdr h;
			const char *why;
			if (s->chunk.len >= MS_REC_HDR_SIZE &&
			    ms_rec_check_hdr(s->chunk.data, &h, &why) == 0 &&
			    MS_REC_HDR_SIZE + (uint64_t)h.len <=
				    limit - cur->off) {
				want = MS_REC_HDR_SIZE + h.len;
				goto break_out;
			}
		}
		if (good == 0) {
			*error_r = ms_errf("segment %llu offset %llu: no whole "
					   "record before the durable end",
					   (unsigned long long)cur->seg,
					   (unsigned long long)cur->off);
			return MS_ECORRUPT;
		}
		s->chunk.len = good;
		return 0;
	}
}

/* ---- a session ---- */

static int win_push(struct sender *s, struct ms_pos end, uint64_t bytes)
{
	if (s->nwin == s->capwin) {
		s->capwin = s->capwin ? s->capwin * 2 : 64;
		s->win = ms_realloc(s->win, s->capwin * sizeof(*s->win));
	}
	s->win[s->nwin].end = end;
	s->win[s->nwin++].bytes = bytes;
	s->win_bytes += bytes;
	return 0;
}

static void win_ack(struct sender *s, struct ms_pos acked)
{
	size_t i = 0;
	while (i < s->nwin && (ms_pos_cmp(s->win[i].end, acked) <= 0 ||
			       (acked.off == 0 && s->win[i].end.seg < acked.seg))) {
		s->win_bytes -= s->win[i].bytes;
		i++;
	}
	if (i == 0)
		return; /* nothing acknowledged (and win may still be NULL) */
	memmove(s->win, s->win + i, (s->nwin - i) * sizeof(*s->win));
	s->nwin -= i;
}

static uint64_t first_segment(struct sender *s)
{
	uint64_t best = 0;
	int dfd = openat(s->root_fd[0], "log", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *de;
	if (d == NULL) {
		if (dfd >= 0)
			close(dfd);
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		uint64_t seg;
		if (ms_seg_parse_name(de->d_name, &seg) == 0 &&
		    (best == 0 || seg < best))
			best = seg;
	}
	closedir(d);
	return best ? best : 1;
}

static int send_data(struct sender *s, struct udsync_link *l,
		     struct ms_pos *cur, const char **error_r)
{
	size_t done = 0;
	while (done < s->chunk.len) {
		struct udsync_msg m = { .type = UDSYNC_DATA };
		size_t n = s->chunk.len - done;
		if (n > UDSYNC_MAX_DATA)
			n = UDSYNC_MAX_DATA;
		m.u.data.seg = cur->seg;
		m.u.data.off = cur->off;
		m.u.data.p = s->chunk.data + done;
		m.u.data.len = (uint32_t)n;
		int ret = udsync_link_send(l, &m, error_r);
		if (ret < 0)
			return ret;
		cur->off += n;
		done += n;
		win_push(s, *cur, n);
	}
	return 0;
}

static int session(struct sender *s, struct udsync_link *l,
		   const char **error_r)
{
	struct feed *f = &s->feed;
	struct udsync_msg m;
	int ret;

	ret = udsync_link_recv(l, (int)s->ucfg.timeout, &m, error_r);
	if (ret == 0) {
		*error_r = "no hello from the receiver";
		return -ETIMEDOUT;
	}
	if (ret < 0)
		return ret;
	if (m.type != UDSYNC_RHELLO) {
		*error_r = "the receiver did not say hello";
		return MS_ECORRUPT;
	}
	if (m.u.rhello.has_store &&
	    memcmp(m.u.rhello.store_id, s->meta.store_id, MS_STORE_ID_SIZE) !=
		    0) {
		*error_r = "the DR store is a copy of another store: refusing "
			   "to send (start the DR site from an empty "
			   "directory)";
		return MS_EMISMATCH;
	}
	if (!m.u.rhello.has_store) {
		struct udsync_msg mm = { .type = UDSYNC_META };
		ms_meta_encode(&s->meta, mm.u.meta);
		if ((ret = udsync_link_send(l, &mm, error_r)) < 0)
			return ret;
		msg_info("sync.initial msg=\"DR store is empty: initial sync of "
			 "the whole log\"");
	}
	struct ms_pos cur = { m.u.rhello.seg, m.u.rhello.off };
	struct ms_pos acked = cur;
	uint64_t acked_seq = m.u.rhello.seq;
	if (cur.seg == 0)
		cur = (struct ms_pos){ first_segment(s), 0 };
	msg_info("streaming segment=%llu offset=%llu seq=%llu",
		 (unsigned long long)cur.seg, (unsigned long long)cur.off,
		 (unsigned long long)acked_seq);
	seg_close(s);
	s->nwin = 0;
	s->win_bytes = 0;
	uint64_t last_heard = mono_ms(), last_beat = 0, last_report = 0;
	int state = -1;

	for (;;) {
		uint64_t now = mono_ms();
		/* ship what is durable, within the window */
		while (s->win_bytes < UDSYNC_WINDOW) {
			if ((ret = next_chunk(s, &cur, error_r)) < 0)
				return ret;
			if (s->chunk.len == 0)
				break;
			if ((ret = send_data(s, l, &cur, error_r)) < 0)
				return ret;
		}
		if (!f->wait_out) {
			struct ms_req q = { .op = MS_OP_REPL_WAIT };
			q.u.repl_wait.seg = f->durable.seg;
			q.u.repl_wait.off = f->durable.off;
			q.u.repl_wait.timeout_ms = 1000;
			if ((ret = feed_send(f, &q, error_r)) < 0)
				return ret;
			f->wait_out = 1;
		}
		if (now - last_beat >= 1000) {
			struct udsync_msg b = { .type = UDSYNC_BEAT };
			b.u.beat.seg = f->durable.seg;
			b.u.beat.off = f->durable.off;
			b.u.beat.seq = f->durable_seq;
			b.u.beat.time_ms = wall_ms();
			if ((ret = udsync_link_send(l, &b, error_r)) < 0)
				return ret;
			last_beat = now;
		}
		struct pollfd p[2] = { { f->fd, POLLIN, 0 },
				       { l->fd, POLLIN, 0 } };
		int more = s->win_bytes < UDSYNC_WINDOW &&
			   ms_pos_cmp(cur, f->durable) < 0;
		if (l->in.len == 0 && poll(p, 2, more ? 0 : 200) < 0 &&
		    errno != EINTR) {
			*error_r = ms_errf("poll: %s", strerror(errno));
			return -errno;
		}
		if ((ret = feed_read(f, 0, error_r)) < 0)
			return ret;
		int got_ack = 0;
		while ((ret = udsync_link_recv(l, 0, &m, error_r)) > 0) {
			last_heard = mono_ms();
			if (m.type == UDSYNC_ERROR) {
				*error_r = ms_errf("the receiver says: %.*s",
						   (int)m.u.error.len,
						   m.u.error.s);
				return MS_ECORRUPT;
			}
			if (m.type != UDSYNC_ACK) {
				*error_r = ms_errf("unexpected %s message",
						   udsync_type_name(m.type));
				return MS_ECORRUPT;
			}
			acked = (struct ms_pos){ m.u.ack.seg, m.u.ack.off };
			acked_seq = m.u.ack.seq;
			win_ack(s, acked);
			got_ack = 1;
		}
		if (ret < 0)
			return ret;
		now = mono_ms();
		if (now - last_heard > s->ucfg.timeout) {
			*error_r = "no word from the receiver: link timed out";
			return -ETIMEDOUT;
		}
		int st = cur.seg < f->durable.seg ? MS_REPL_CATCHING_UP
						  : MS_REPL_STREAMING;
		if (got_ack || st != state || now - last_report >= 1000) {
			struct ms_req q = { .op = MS_OP_REPL_ACK };
			q.u.repl_ack.seg = acked.seg;
			q.u.repl_ack.off = acked.off;
			q.u.repl_ack.seq = acked_seq;
			q.u.repl_ack.state = (uint8_t)st;
			if ((ret = feed_send(f, &q, error_r)) < 0)
				return ret;
			state = st;
			last_report = now;
		}
	}
}

int udsync_send_run(const char *conf, const char **error_r)
{
	struct sender s;
	int ret;

	memset(&s, 0, sizeof(s));
	s.rfd[0] = s.rfd[1] = -1;
	ms_buf_init(&s.chunk, 0);
	ms_buf_init(&s.feed.in, 0);
	s.feed.fd = -1;
	if ((ret = ms_store_cfg_load(conf, &s.scfg, error_r)) < 0)
		return ret;
	if (s.scfg.log == MS_LOG_SYSLOG)
		ms_msg_syslog(1);
	if ((ret = udsync_cfg_load(conf, &s.ucfg, error_r)) < 0)
		return ret;
	if ((ret = udsync_keys_load(s.ucfg.key_file, s.ucfg.peer_key, &s.keys,
				    error_r)) < 0)
		return ret;
	const char *dirs[2] = { s.scfg.primary, s.scfg.secondary };
	for (int c = 0; c < 2; c++) {
		s.root_fd[c] = open(dirs[c], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s.root_fd[c] < 0 && c == 0) {
			*error_r = ms_errf("%s: %s", dirs[c], strerror(errno));
			return -errno;
		}
	}
	for (;;) {
		const char *why = "";
		int fd = -1;
		struct udsync_link l;
		int have_link = 0;

		if (ms_meta_read(s.root_fd[0], &s.meta, &why) < 0 &&
		    (s.root_fd[1] < 0 ||
		     ms_meta_read(s.root_fd[1], &s.meta, &why) < 0)) {
			msg_warn("store.failed dir=%s error=%s msg=retrying",
				 msg_q(dirs[0]), msg_q(why));
			goto retry;
		}
		if (feed_open(&s.feed, s.scfg.admin_socket, &why) < 0) {
			msg_warn("feed.failed error=%s msg=retrying", msg_q(why));
			goto retry;
		}
		fd = udsync_tcp_connect(s.ucfg.connect, (unsigned)s.ucfg.timeout,
					&why);
		if (fd < 0) {
			msg_warn("connect.failed error=%s msg=retrying", msg_q(why));
			goto retry;
		}
		if (udsync_link_init(&l, fd, 1, &s.keys,
				     (unsigned)s.ucfg.timeout, &why) < 0) {
			msg_error("session.refused peer=%s error=%s",
				  msg_q(s.ucfg.connect), msg_q(why));
			udsync_link_free(&l);
			goto retry;
		}
		have_link = 1;
		ret = session(&s, &l, &why);
		msg_warn("session.ended error=%s", msg_q(why));
		if (ret == MS_EMISMATCH) {
			*error_r = why;
			udsync_link_free(&l);
			close(fd);
			return ret;
		}
		{
			struct udsync_msg e = { .type = UDSYNC_ERROR };
			const char *ign;
			e.u.error.s = why;
			e.u.error.len = (uint16_t)(strlen(why) > UDSYNC_MAX_ERROR
							   ? UDSYNC_MAX_ERROR
							   : strlen(why));
			(void)udsync_link_send(&l, &e, &ign);
		}
	retry:
		if (have_link)
			udsync_link_free(&l);
		if (fd >= 0)
			close(fd);
		seg_close(&s);
		/* mstored marks the DR site disconnected when the acks
		   stop; start over */
		feed_close(&s.feed);
		usleep((useconds_t)s.ucfg.reconnect_delay * 1000);
	}
}
