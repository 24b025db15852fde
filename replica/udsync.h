/*
 * udsync.h - udsync, the log shipper between the primary site and the DR
 * site (docs/replication.md): the inner message codec (udsync_wire.c,
 * pure), the authenticated encrypted link (udsync_auth.c), the DR store
 * writer (udsync_store.c), the two roles (udsync_send.c, udsync_recv.c)
 * and the [udsync] config table (udsync_cfg.c).  Positions are the
 * log's (segment, offset); (0, 0) is "nothing yet".
 */
#ifndef UDSYNC_H
#define UDSYNC_H

#include <sodium.h>

#include "buf.h"
#include "seg.h"

/* ---- limits ---- */
#define UDSYNC_MAX_DATA ((uint32_t)1 << 20)	/* bytes in one DATA */
#define UDSYNC_MAX_MSG (UDSYNC_MAX_DATA + 64)	/* one plaintext message */
#define UDSYNC_MAX_FRAME \
	(UDSYNC_MAX_MSG + crypto_secretstream_xchacha20poly1305_ABYTES)
#define UDSYNC_MAX_ERROR 1024
#define UDSYNC_WINDOW ((uint64_t)8 << 20)	/* unacknowledged bytes */

/* ---- inner messages (udsync_wire.c) ---- */
enum udsync_type {
	UDSYNC_AUTH = 1,   /* both ways, first: the transcript hash */
	UDSYNC_RHELLO = 2, /* recv → send: who I am, where I am */
	UDSYNC_META = 3,   /* send → recv: mstore.meta, for an empty DR */
	UDSYNC_DATA = 4,   /* send → recv: log bytes at (seg, off) */
	UDSYNC_ACK = 5,    /* recv → send: durable up to (seg, off), seq */
	UDSYNC_BEAT = 6,   /* send → recv: primary's durable end, time */
	UDSYNC_ERROR = 7,  /* either way, before closing: why */
	UDSYNC_TYPE_MAX = UDSYNC_ERROR
};

struct udsync_msg {
	uint8_t type;
	union {
		uint8_t auth[32];
		struct {
			uint8_t store_id[MS_STORE_ID_SIZE];
			uint8_t has_store;
			uint64_t seg, off, seq, timeline;
		} rhello;
		uint8_t meta[MS_META_SIZE];
		struct {
			uint64_t seg, off;
			const uint8_t *p; /* borrowed from the decoded input */
			uint32_t len;
		} data;
		struct {
			uint64_t seg, off, seq;
		} ack;
		struct {
			uint64_t seg, off, seq, time_ms;
		} beat;
		struct {
			const char *s; /* borrowed, not NUL-terminated */
			uint16_t len;
		} error;
	} u;
};

/* Check and decode one message; 0, MS_ETRUNC or MS_ECORRUPT (*error_r). */
int udsync_wire_decode(const uint8_t *p, size_t len, struct udsync_msg *m_r,
		       const char **error_r);
/* Append the message to out; 0, -EINVAL (breaks a rule) or MS_ETOOBIG. */
int udsync_wire_encode(const struct udsync_msg *m, struct ms_buf *out);
const char *udsync_type_name(unsigned type);

/* ---- keys and the link (udsync_auth.c) ---- */
struct udsync_keys {
	uint8_t sk[32], pk[32];
	uint8_t peer_pk[32];
};

/* A new secret key file (mode 0600, never overwritten); pub_hex_r gets
   the public key to pin at the peer. */
int udsync_keygen(const char *path, char pub_hex_r[65], const char **error_r);
/* Own secret key file and the pinned peer public key (64 hex digits). */
int udsync_keys_load(const char *key_file, const char *peer_hex,
		     struct udsync_keys *k_r, const char **error_r);

struct udsync_link {
	int fd;
	crypto_secretstream_xchacha20poly1305_state tx, rx;
	struct ms_buf in;    /* ciphertext frames read, not yet opened */
	struct ms_buf plain; /* the last message opened */
	struct ms_buf out;
	uint64_t frames_in, frames_out, bytes_in, bytes_out;
};

/*
 * Handshake on a connected socket (docs/replication.md): hellos with the
 * static and an ephemeral key, keys from both X25519 exchanges and the
 * transcript, secretstream headers, AUTH both ways.  is_client: the
 * sender.  0, or <0 with *error_r (an unknown peer key says so).
 */
int udsync_link_init(struct udsync_link *l, int fd, int is_client,
		     const struct udsync_keys *k, unsigned timeout_ms,
		     const char **error_r);
void udsync_link_free(struct udsync_link *l);
int udsync_link_send(struct udsync_link *l, const struct udsync_msg *m,
		     const char **error_r);
/* 1 with *m_r (borrowing l->plain), 0 after timeout_ms with nothing
   whole, <0 closed or refused (a frame that fails to open). */
int udsync_link_recv(struct udsync_link *l, int timeout_ms,
		     struct udsync_msg *m_r, const char **error_r);

/* ---- the DR store writer (udsync_store.c) ---- */
struct udsync_store;

int udsync_store_open(const char *dir0, const char *dir1,
		      struct udsync_store **st_r, const char **error_r);
void udsync_store_close(struct udsync_store **st);
/* Has a store identity (mstore.meta); *meta_r. */
int udsync_store_meta(struct udsync_store *st, struct ms_meta *meta_r);
/* Take the primary's identity (an empty DR store only). */
int udsync_store_set_meta(struct udsync_store *st, const uint8_t *raw,
			  size_t len, const char **error_r);
/* The durable position: where the next byte goes; seq of the last. */
void udsync_store_pos(struct udsync_store *st, uint64_t *seg_r,
		      uint64_t *off_r, uint64_t *seq_r, uint64_t *timeline_r);
/* A session starts: where to ask the sender to start (the durable
   position, or a segment's start to fetch it again whole); drops input
   of the last session that was not a whole record. */
void udsync_store_resume(struct udsync_store *st, uint64_t *seg_r,
			 uint64_t *off_r, uint64_t *seq_r, uint64_t *timeline_r);
/* Bytes at (seg, off): checked record by record, queued for writing. */
int udsync_store_data(struct udsync_store *st, uint64_t seg, uint64_t off,
		      const uint8_t *p, size_t len, const char **error_r);
/* Write what was checked, fdatasync both copies, apply RETIREs. */
int udsync_store_flush(struct udsync_store *st, const char **error_r);
/* Bytes checked and queued but not yet durable. */
size_t udsync_store_queued(const struct udsync_store *st);

/* ---- config (udsync_cfg.c) ---- */
struct udsync_cfg {
	char *key_file;
	char *peer_key;
	char *listen;
	char *connect;
	uint64_t reconnect_delay; /* ms */
	uint64_t timeout;         /* ms */
};
int udsync_cfg_load(const char *path, struct udsync_cfg *cfg,
		    const char **error_r);
void udsync_cfg_free(struct udsync_cfg *cfg);
int udsync_cfg_dump(const struct udsync_cfg *cfg, FILE *out);
/* "host:port" → a connected or listening TCP socket (IPv4/IPv6). */
int udsync_tcp_connect(const char *hostport, unsigned timeout_ms,
		       const char **error_r);
int udsync_tcp_listen(const char *hostport, const char **error_r);

/* ---- the roles ---- */
int udsync_send_run(const char *conf, const char **error_r);
int udsync_recv_run(const char *conf, const char **error_r);

#endif
