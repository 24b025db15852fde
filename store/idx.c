/*
 * idx.c - the LMDB index derived from the log; see idx.h for what it
 * holds and the table layouts.
 *
 * Rules kept throughout:
 *   - every value goes out through db_put() (which appends the checksum)
 *     and comes back through db_get()/val_open() (which checks it) and a
 *     decoder that checks the size and layout before any field is used;
 *   - a pointer into the map (mdb_get) is dead after the next write in
 *     the transaction: handlers copy what they need (into structs or
 *     t->val) before they write;
 *   - an apply handler finds every reason for an anomaly before its first
 *     write, so an anomaly never leaves half an effect (RETIRE excepted:
 *     a bad drop is skipped and the others apply, see apply_retire).
 */
#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "body.h"
#include "buf.h"
#include "event.h"
#include "idx.h"
#include "log.h"
#include "msg.h"

enum {
	DB_META,
	DB_USERS,
	DB_USER_NAMES,
	DB_MBOXES,
	DB_MBOX_NAMES,
	DB_SUBS,
	DB_MSGS,
	DB_EXPUNGED,
	DB_MODSEQ,
	DB_BODIES,
	DB_SEGLIVE,
	DB_COMPACTED,
	DB_COUNT
};

static const char *const db_names[DB_COUNT] = {
	"meta", "users",    "user_names", "mboxes", "mbox_names", "subs",
	"msgs", "expunged", "modseq",     "bodies", "seglive",    "compacted",
};

#define SUM_SIZE 4
static const uint8_t format_magic[8] = {'M', 'S', 'T', 'O', 'I', 'D', 'X', 0};
#define FORMAT_SIZE 16
#define STATE_SIZE 48
#define STORE_SIZE 16
#define BOOT_ID_MAX 40
#define OPEN_SIZE (8 + BOOT_ID_MAX)
#define USER_FIXED 42
#define MBOX_FIXED 98
#define MSG_FIXED 128
#define XMSG_PREFIX 24
#define BODY_SIZE 56
#define SEGLIVE_SIZE 16
#define COMPACTED_SIZE 24
#define KW_MAX MS_EVENT_KEYWORD_MAX

struct idx_state {
	uint64_t seq;
	struct ms_pos pos;
	uint64_t records, anomalies, last_anomaly_seq;
};

struct ms_idx {
	MDB_env *env;
	MDB_dbi db[DB_COUNT];
	struct ms_idx_txn *txn; /* the open write transaction */
	unsigned nreaders;      /* open read handles */
	unsigned borrowed;      /* read handles on the write transaction */
	uint64_t skipped;
};

struct ms_idx_rd {
	struct ms_idx *idx;
	MDB_txn *txn;
	int owned; /* a read transaction of our own, not the write one */
};

/* A keyword: bytes borrowed from a payload or a value. */
struct kw {
	const uint8_t *p;
	uint16_t len;
};

struct kwv {
	struct kw *v;
	size_t n, cap;
};

struct ms_idx_txn {
	struct ms_idx *idx;
	struct ms_idx_rd rd;
	struct idx_state st;
	int failed;
	const char *err;
	struct ms_buf val;  /* a value being built */
	struct ms_buf copy; /* a copy of a value being changed */
	struct kwv rec_kw, old_kw, new_kw;
	/* range_walk: its cursor on the messages (at the one being
	   changed) and two on the modseq index, one where the old entries
	   go from and one where the new ones come (the mailbox's end), so
	   that a change of many messages does not search each from the
	   root: LMDB looks on a cursor's page first */
	MDB_cursor *walk_msgs, *walk_modseq, *walk_modseq_put;
};

/* A user or mailbox loaded for change: the name is copied. */
struct user_rec {
	struct ms_idx_user u;
	char name[MS_EVENT_USER_NAME_MAX];
};

struct mbox_rec {
	struct ms_idx_mbox m;
	char name[MS_EVENT_MBOX_NAME_MAX];
};

struct body_v {
	uint64_t seq, seg, off, rec_len, plain_len, refs, xrefs;
};

/* A body entry made by a PLACE whose BODY record was not seen (idx.h). */
static int body_has_loc(const struct body_v *b)
{
	return b->seq != 0;
}

static const char *test_boot_id;

void ms_idx_test_boot_id(const char *boot_id)
{
	test_boot_id = boot_id;
}

/* ---- bytes --------------------------------------------------------------- */

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t name_hash(const void *name, size_t len)
{
	return XXH3_64bits(len ? name : "", len);
}

static uint32_t val_sum(const void *k, size_t kl, const void *v, size_t vl)
{
	uint64_t seed = XXH3_64bits(kl ? k : "", kl);
	return (uint32_t)XXH3_64bits_withSeed(vl ? v : "", vl, seed);
}

static const char *hex(const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char out[2 * 40 + 4];
	const uint8_t *b = p;
	size_t shown = n < 40 ? n : 40, o = 0;

	for (size_t i = 0; i < shown; i++) {
		out[o++] = digits[b[i] >> 4];
		out[o++] = digits[b[i] & 15];
	}
	if (shown < n) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return ms_errf("%s", out);
}

static int kw_cmp_raw(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c != 0)
		return c;
	return al < bl ? -1 : al > bl ? 1 : 0;
}

/* a + d for a counter; *under = 1 (and 0 returned) if it would go below 0. */
static uint64_t sat_add(uint64_t a, int64_t d, int *under)
{
	if (d < 0) {
		uint64_t m = (uint64_t)(-(d + 1)) + 1;
		if (m > a) {
			*under = 1;
			return 0;
		}
		return a - m;
	}
	return a + (uint64_t)d;
}

/* ---- LMDB errors -----------------------------------------------------------
 */

/*
 * LMDB's rc as our code, always negative: MS_E* for LMDB's own codes,
 * -errno for the system errors LMDB passes on (-EIO for any other; the
 * error text keeps the detail).  A macro (rc must have no side effects),
 * so that every caller, and the static analyzer, sees a negative constant.
 */
#define LMDB_CODE(rc)                                                \
	((rc) == MDB_NOTFOUND           ? MS_ENOTFOUND               \
	 : (rc) == MDB_MAP_FULL         ? MS_ETOOBIG                 \
	 : (rc) == MDB_TXN_FULL         ? -EFBIG                     \
	 : (rc) == MDB_PAGE_FULL        ? -EFBIG                     \
	 : (rc) == MDB_VERSION_MISMATCH ? MS_EVERSION                \
	 : (rc) == MDB_READERS_FULL     ? -EAGAIN                    \
	 : (rc) == MDB_CORRUPTED || (rc) == MDB_PAGE_NOTFOUND ||     \
			 (rc) == MDB_INVALID || (rc) == MDB_PANIC || \
			 (rc) == MDB_INCOMPATIBLE                    \
		 ? MS_ECORRUPT                                       \
	 : (rc) < 0       ? MS_ESTATE                                \
	 : (rc) == ENOSPC ? -ENOSPC                                  \
	 : (rc) == ENOMEM ? -ENOMEM                                  \
	 : (rc) == EACCES ? -EACCES                                  \
	 : (rc) == EPERM  ? -EPERM                                   \
	 : (rc) == ENOENT ? -ENOENT                                  \
	 : (rc) == EROFS  ? -EROFS                                   \
	 : (rc) == EAGAIN ? -EAGAIN                                  \
	 : (rc) == EBUSY  ? -EBUSY                                   \
	 : (rc) == EINVAL ? -EINVAL                                  \
	 : (rc) == EDQUOT ? -EDQUOT                                  \
	 : (rc) == EFBIG  ? -EFBIG                                   \
			  : -EIO)

static void lmdb_msg(int rc, const char *what, const char **error_r)
{
	if (error_r != NULL)
		*error_r = ms_errf("index: %s: %s%s", what, mdb_strerror(rc),
				   rc == MDB_MAP_FULL ? " (grow the map)" : "");
}

/* Say what failed (if error_r) and give LMDB_CODE(rc). */
#define map_err(rc, what, error_r) (lmdb_msg(rc, what, error_r), LMDB_CODE(rc))

static void damaged_msg(int db, const void *key, size_t klen, const char *why,
			const char **error_r)
{
	if (error_r != NULL)
		*error_r = ms_errf("index damaged: %s entry %s: %s",
				   db_names[db], hex(key, klen), why);
}

/* Say what is damaged; the value is MS_ECORRUPT (seen at every call site). */
#define damaged(db, key, klen, why, error_r) \
	(damaged_msg(db, key, klen, why, error_r), MS_ECORRUPT)

/* ---- values: checksum ------------------------------------------------------
 */

static int val_open(int db, const MDB_val *key, const MDB_val *val,
		    MDB_val *v_r, const char **error_r)
{
	const uint8_t *p = val->mv_data;
	size_t n;

	if (val->mv_size < SUM_SIZE)
		return damaged(db, key->mv_data, key->mv_size,
			       "value shorter than its checksum", error_r);
	n = val->mv_size - SUM_SIZE;
	if (ms_get32(p + n) != val_sum(key->mv_data, key->mv_size, p, n))
		return damaged(db, key->mv_data, key->mv_size,
			       "checksum mismatch", error_r);
	v_r->mv_size = n;
	v_r->mv_data = val->mv_data;
	return 0;
}

/* The checked value of key k in db; *v_r is emptied first, whatever comes. */
static int db_get(MDB_txn *txn, const struct ms_idx *idx, int db, const void *k,
		  size_t kl, MDB_val *v_r, const char **error_r)
{
	MDB_val key = {.mv_size = kl, .mv_data = (void *)k}, val;
	int rc;

	v_r->mv_size = 0;
	v_r->mv_data = NULL;
	rc = mdb_get(txn, idx->db[db], &key, &val);

	if (rc == MDB_NOTFOUND)
		return MS_ENOTFOUND;
	if (rc != 0)
		return map_err(rc, db_names[db], error_r);
	return val_open(db, &key, &val, v_r, error_r);
}

/* Mark the transaction failed; the value is ret. */
#define txn_fail(t, ret) ((t)->failed = 1, (ret))

/* Put v with its checksum.  v must not point into the map: MDB_RESERVE
   may move pages. */
/* Put k -> v and its checksum, through cursor c if not NULL (flags for
   mdb_cursor_put: MDB_CURRENT for the entry it is at, whose key k must
   be; the cursor is left at the entry). */
static int reserved_put(MDB_txn *txn, const struct ms_idx *idx, int db,
			MDB_cursor *c, unsigned int flags, const void *k,
			size_t kl, const void *v, size_t vl,
			const char **error_r)
{
	MDB_val key = {.mv_size = kl, .mv_data = (void *)k};
	MDB_val val = {.mv_size = vl + SUM_SIZE, .mv_data = NULL};
	int rc = c != NULL
			 ? mdb_cursor_put(c, &key, &val, MDB_RESERVE | flags)
			 : mdb_put(txn, idx->db[db], &key, &val, MDB_RESERVE);

	if (rc != 0)
		return map_err(rc, db_names[db], error_r);
	if (vl > 0)
		memcpy(val.mv_data, v, vl);
	ms_put32((uint8_t *)val.mv_data + vl, val_sum(k, kl, v, vl));
	return 0;
}

static int raw_put(MDB_txn *txn, const struct ms_idx *idx, int db,
		   const void *k, size_t kl, const void *v, size_t vl,
		   const char **error_r)
{
	return reserved_put(txn, idx, db, NULL, 0, k, kl, v, vl, error_r);
}

static int db_put(struct ms_idx_txn *t, int db, const void *k, size_t kl,
		  const void *v, size_t vl)
{
	int ret = raw_put(t->rd.txn, t->idx, db, k, kl, v, vl, &t->err);

	return ret != 0 ? txn_fail(t, ret) : 0;
}

/* Delete an entry the invariants say exists. */
static int db_del(struct ms_idx_txn *t, int db, const void *k, size_t kl)
{
	MDB_val key = {.mv_size = kl, .mv_data = (void *)k};
	int rc = mdb_del(t->rd.txn, t->idx->db[db], &key, NULL);

	if (rc == MDB_NOTFOUND)
		return txn_fail(t,
				damaged(db, k, kl, "missing entry", &t->err));
	if (rc != 0)
		return txn_fail(t, map_err(rc, db_names[db], &t->err));
	return 0;
}

/* A message key whose uid is above hi: the walk past a range ends there,
   before the value is checked.  A key of another size is not (its
   decode reports the damage). */
static int msg_key_above(const MDB_val *key, uint32_t hi)
{
	return key->mv_size == 12 &&
	       get_be32((const uint8_t *)key->mv_data + 8) > hi;
}

/* db_put through cursor c of db (reserved_put) */
static int cur_put(struct ms_idx_txn *t, MDB_cursor *c, int db, const void *k,
		   size_t kl, const void *v, size_t vl, unsigned int flags)
{
	int ret = reserved_put(t->rd.txn, t->idx, db, c, flags, k, kl, v, vl,
			       &t->err);

	return ret != 0 ? txn_fail(t, ret) : 0;
}

/* db_del through a cursor of db: a cursor near the key finds it without
   a search from the root. */
static int cur_del(struct ms_idx_txn *t, MDB_cursor *c, int db, const void *k,
		   size_t kl)
{
	MDB_val key = {.mv_size = kl, .mv_data = (void *)k}, val;
	int rc = mdb_cursor_get(c, &key, &val, MDB_SET);

	if (rc == MDB_NOTFOUND)
		return txn_fail(t,
				damaged(db, k, kl, "missing entry", &t->err));
	if (rc == 0)
		rc = mdb_cursor_del(c, 0);
	if (rc != 0)
		return txn_fail(t, map_err(rc, db_names[db], &t->err));
	return 0;
}

/*
 * First entry of db at or after the key seek[0..slen-1] whose key starts
 * with seek[0..plen-1].  1 with *k_r (and *v_r checked), 0 none, <0.
 */
static int db_first(struct ms_idx_txn *t, MDB_cursor *c, int db,
		    const uint8_t *seek, size_t slen, size_t plen, MDB_val *k_r,
		    MDB_val *v_r)
{
	const uint8_t *prefix = seek;
	MDB_val key = {.mv_size = slen, .mv_data = (void *)seek}, val;
	int rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return txn_fail(t, map_err(rc, db_names[db], &t->err));
	if (key.mv_size < plen || memcmp(key.mv_data, prefix, plen) != 0)
		return 0;
	*k_r = key;
	if (v_r != NULL) {
		int ret = val_open(db, &key, &val, v_r, &t->err);
		if (ret < 0)
			return txn_fail(t, ret);
	}
	return 1;
}

static int cursor_open(struct ms_idx_txn *t, int db, MDB_cursor **c_r)
{
	int rc = mdb_cursor_open(t->rd.txn, t->idx->db[db], c_r);
	if (rc != 0)
		return txn_fail(t, map_err(rc, db_names[db], &t->err));
	return 0;
}

/* ---- value codecs ----------------------------------------------------------
 */

static int user_decode(const MDB_val *key, const MDB_val *v,
		       struct ms_idx_user *u_r, const char **error_r)
{
	const uint8_t *p = v->mv_data;
	uint16_t nl;

	if (key->mv_size != 8)
		return damaged(DB_USERS, key->mv_data, key->mv_size, "key size",
			       error_r);
	if (v->mv_size < USER_FIXED)
		return damaged(DB_USERS, key->mv_data, key->mv_size,
			       "value size", error_r);
	nl = ms_get16(p + 40);
	if (nl == 0 || nl > MS_EVENT_USER_NAME_MAX ||
	    v->mv_size != (size_t)USER_FIXED + nl)
		return damaged(DB_USERS, key->mv_data, key->mv_size,
			       "name length", error_r);
	u_r->id = get_be64(key->mv_data);
	u_r->max_bytes = ms_get64(p);
	u_r->max_messages = ms_get64(p + 8);
	u_r->use_bytes = ms_get64(p + 16);
	u_r->use_messages = ms_get64(p + 24);
	u_r->mailboxes = ms_get64(p + 32);
	u_r->name = (const char *)p + USER_FIXED;
	u_r->name_len = nl;
	return 0;
}

static size_t user_encode(const struct ms_idx_user *u, uint8_t *out)
{
	ms_put64(out, u->max_bytes);
	ms_put64(out + 8, u->max_messages);
	ms_put64(out + 16, u->use_bytes);
	ms_put64(out + 24, u->use_messages);
	ms_put64(out + 32, u->mailboxes);
	ms_put16(out + 40, (uint16_t)u->name_len);
	memcpy(out + USER_FIXED, u->name, u->name_len);
	return USER_FIXED + u->name_len;
}

static int mbox_decode(const MDB_val *key, const MDB_val *v,
		       struct ms_idx_mbox *m_r, const char **error_r)
{
	const uint8_t *p = v->mv_data;
	uint16_t nl;

	if (key->mv_size != 8)
		return damaged(DB_MBOXES, key->mv_data, key->mv_size,
			       "key size", error_r);
	if (v->mv_size < MBOX_FIXED)
		return damaged(DB_MBOXES, key->mv_data, key->mv_size,
			       "value size", error_r);
	nl = ms_get16(p + 96);
	if (nl == 0 || nl > MS_EVENT_MBOX_NAME_MAX ||
	    v->mv_size != (size_t)MBOX_FIXED + nl)
		return damaged(DB_MBOXES, key->mv_data, key->mv_size,
			       "name length", error_r);
	m_r->id = get_be64(key->mv_data);
	m_r->user_id = ms_get64(p);
	m_r->uidvalidity = ms_get32(p + 8);
	m_r->special_use = ms_get32(p + 12);
	m_r->uidnext = ms_get64(p + 16);
	m_r->highestmodseq = ms_get64(p + 24);
	m_r->messages = ms_get64(p + 32);
	m_r->unseen = ms_get64(p + 40);
	m_r->bytes = ms_get64(p + 48);
	m_r->vbytes = ms_get64(p + 56);
	m_r->expunged = ms_get64(p + 64);
	memcpy(m_r->guid, p + 72, sizeof(m_r->guid));
	m_r->purged_modseq = ms_get64(p + 88);
	m_r->name = (const char *)p + MBOX_FIXED;
	m_r->name_len = nl;
	m_r->subscribed = 0;
	return 0;
}

static size_t mbox_encode(const struct ms_idx_mbox *m, uint8_t *out)
{
	ms_put64(out, m->user_id);
	ms_put32(out + 8, m->uidvalidity);
	ms_put32(out + 12, m->special_use);
	ms_put64(out + 16, m->uidnext);
	ms_put64(out + 24, m->highestmodseq);
	ms_put64(out + 32, m->messages);
	ms_put64(out + 40, m->unseen);
	ms_put64(out + 48, m->bytes);
	ms_put64(out + 56, m->vbytes);
	ms_put64(out + 64, m->expunged);
	memcpy(out + 72, m->guid, sizeof(m->guid));
	ms_put64(out + 88, m->purged_modseq);
	ms_put16(out + 96, (uint16_t)m->name_len);
	memcpy(out + MBOX_FIXED, m->name, m->name_len);
	return MBOX_FIXED + m->name_len;
}

/* Check a keyword list: n strs, 1..KW_MAX bytes, ascending, exact end. */
static int kw_list_valid(const uint8_t *p, size_t len, uint32_t n)
{
	const uint8_t *prev = NULL;
	size_t prev_len = 0, off = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (len - off < 2)
			return 0;
		size_t l = ms_get16(p + off);
		off += 2;
		if (l == 0 || l > KW_MAX || len - off < l)
			return 0;
		if (prev != NULL && kw_cmp_raw(prev, prev_len, p + off, l) >= 0)
			return 0;
		prev = p + off;
		prev_len = l;
		off += l;
	}
	return off == len;
}

/* MSG (msgs), or 24 bytes of expunge fields + MSG (expunged). */
static int msg_decode(int db, const MDB_val *key, const MDB_val *v,
		      struct ms_idx_msg *m_r, const char **error_r)
{
	const uint8_t *p = v->mv_data;
	size_t n = v->mv_size;
	struct ms_idx_msg m;

	memset(&m, 0, sizeof(m));
	if (key->mv_size != 12)
		return damaged(db, key->mv_data, key->mv_size, "key size",
			       error_r);
	if (db == DB_EXPUNGED) {
		if (n < XMSG_PREFIX)
			return damaged(db, key->mv_data, key->mv_size,
				       "value size", error_r);
		m.expunge_modseq = ms_get64(p);
		m.expunge_seq = ms_get64(p + 8);
		m.expunge_time = ms_get64(p + 16);
		p += XMSG_PREFIX;
		n -= XMSG_PREFIX;
	}
	if (n < MSG_FIXED)
		return damaged(db, key->mv_data, key->mv_size, "value size",
			       error_r);
	m.mbox_id = get_be64(key->mv_data);
	m.uid = get_be32((const uint8_t *)key->mv_data + 8);
	m.modseq = ms_get64(p);
	m.flags = ms_get32(p + 8);
	m.nkeywords = ms_get32(p + 12);
	m.received_date = (int64_t)ms_get64(p + 16);
	m.save_date = (int64_t)ms_get64(p + 24);
	memcpy(m.guid, p + 32, 16);
	memcpy(m.body_key, p + 48, 32);
	m.physical_size = ms_get64(p + 80);
	m.virtual_size = ms_get64(p + 88);
	m.place_seq = ms_get64(p + 96);
	m.place_pos.seg = ms_get64(p + 104);
	m.place_pos.off = ms_get64(p + 112);
	m.place_len = ms_get64(p + 120);
	m.keywords = p + MSG_FIXED;
	m.keywords_len = n - MSG_FIXED;
	if ((m.flags & ~(uint32_t)MS_EVENT_FLAG_MASK) != 0)
		return damaged(db, key->mv_data, key->mv_size, "flags",
			       error_r);
	if (!kw_list_valid(m.keywords, m.keywords_len, m.nkeywords))
		return damaged(db, key->mv_data, key->mv_size, "keywords",
			       error_r);
	*m_r = m;
	return 0;
}

static int msg_encode(const struct ms_idx_msg *m, const struct kwv *kws,
		      int expunged, struct ms_buf *out)
{
	uint8_t f[XMSG_PREFIX + MSG_FIXED];
	uint8_t *p = f;
	int ret;

	ms_buf_reset(out);
	if (expunged) {
		ms_put64(p, m->expunge_modseq);
		ms_put64(p + 8, m->expunge_seq);
		ms_put64(p + 16, m->expunge_time);
		p += XMSG_PREFIX;
	}
	ms_put64(p, m->modseq);
	ms_put32(p + 8, m->flags);
	ms_put32(p + 12, kws != NULL ? (uint32_t)kws->n : m->nkeywords);
	ms_put64(p + 16, (uint64_t)m->received_date);
	ms_put64(p + 24, (uint64_t)m->save_date);
	memcpy(p + 32, m->guid, 16);
	memcpy(p + 48, m->body_key, 32);
	ms_put64(p + 80, m->physical_size);
	ms_put64(p + 88, m->virtual_size);
	ms_put64(p + 96, m->place_seq);
	ms_put64(p + 104, m->place_pos.seg);
	ms_put64(p + 112, m->place_pos.off);
	ms_put64(p + 120, m->place_len);
	if ((ret = ms_buf_append(out, f, (size_t)(p - f) + MSG_FIXED)) < 0)
		return ret;
	if (kws == NULL)
		return ms_buf_append(out, m->keywords, m->keywords_len);
	for (size_t i = 0; i < kws->n; i++) {
		if ((ret = ms_wr_u16(out, kws->v[i].len)) < 0 ||
		    (ret = ms_wr_bytes(out, kws->v[i].p, kws->v[i].len)) < 0)
			return ret;
	}
	return 0;
}

int ms_idx_msg_keyword(const struct ms_idx_msg *m, size_t *off,
		       const char **kw_r, size_t *len_r)
{
	/* the list was checked by msg_decode */
	if (*off + 2 > m->keywords_len)
		return 0;
	size_t l = ms_get16(m->keywords + *off);
	if (*off + 2 + l > m->keywords_len)
		return 0;
	*kw_r = (const char *)m->keywords + *off + 2;
	*len_r = l;
	*off += 2 + l;
	return 1;
}

static int body_decode(const MDB_val *key, const MDB_val *v, struct body_v *b_r,
		       const char **error_r)
{
	const uint8_t *p = v->mv_data;

	if (key->mv_size != 32 || v->mv_size != BODY_SIZE)
		return damaged(DB_BODIES, key->mv_data, key->mv_size, "size",
			       error_r);
	b_r->seq = ms_get64(p);
	b_r->seg = ms_get64(p + 8);
	b_r->off = ms_get64(p + 16);
	b_r->rec_len = ms_get64(p + 24);
	b_r->plain_len = ms_get64(p + 32);
	b_r->refs = ms_get64(p + 40);
	b_r->xrefs = ms_get64(p + 48);
	return 0;
}

static void body_encode(const struct body_v *b, uint8_t out[BODY_SIZE])
{
	ms_put64(out, b->seq);
	ms_put64(out + 8, b->seg);
	ms_put64(out + 16, b->off);
	ms_put64(out + 24, b->rec_len);
	ms_put64(out + 32, b->plain_len);
	ms_put64(out + 40, b->refs);
	ms_put64(out + 48, b->xrefs);
}

static int state_decode(const MDB_val *v, struct idx_state *st,
			const char **error_r)
{
	const uint8_t *p = v->mv_data;

	if (v->mv_size != STATE_SIZE)
		return damaged(DB_META, "state", 5, "size", error_r);
	st->seq = ms_get64(p);
	st->pos.seg = ms_get64(p + 8);
	st->pos.off = ms_get64(p + 16);
	st->records = ms_get64(p + 24);
	st->anomalies = ms_get64(p + 32);
	st->last_anomaly_seq = ms_get64(p + 40);
	return 0;
}

static int state_load(MDB_txn *txn, const struct ms_idx *idx,
		      struct idx_state *st, const char **error_r)
{
	MDB_val v;
	int ret = db_get(txn, idx, DB_META, "state", 5, &v, error_r);

	if (ret == MS_ENOTFOUND)
		return damaged(DB_META, "state", 5, "missing", error_r);
	if (ret < 0)
		return ret;
	return state_decode(&v, st, error_r);
}

/* ---- keyword sets ----------------------------------------------------------
 */

static void kwv_push(struct kwv *v, const uint8_t *p, uint16_t len)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 16;
		v->v = ms_realloc(v->v, v->cap * sizeof(*v->v));
	}
	v->v[v->n++] = (struct kw){p, len};
}

static int kw_qcmp(const void *a, const void *b)
{
	const struct kw *x = a, *y = b;
	return kw_cmp_raw(x->p, x->len, y->p, y->len);
}

static void kwv_canon(struct kwv *v)
{
	size_t o = 0;

	if (v->n < 2)
		return;
	qsort(v->v, v->n, sizeof(*v->v), kw_qcmp);
	for (size_t i = 1; i < v->n; i++) {
		if (kw_qcmp(&v->v[o], &v->v[i]) != 0)
			v->v[++o] = v->v[i];
	}
	v->n = o + 1;
}

static void kwv_from_msg(struct kwv *v, const struct ms_idx_msg *m)
{
	size_t off = 0, len;
	const char *kw;

	v->n = 0;
	while (ms_idx_msg_keyword(m, &off, &kw, &len) > 0)
		kwv_push(v, (const uint8_t *)kw, (uint16_t)len);
}

/* From a decoded event: canonical (sorted, unique). */
static int kwv_from_event(struct kwv *v, const struct ms_event *ev)
{
	struct ms_event_kw_iter it;
	const char *kw;
	size_t len;
	int ret;

	v->n = 0;
	ms_event_kw_iter_init(&it, ev);
	while ((ret = ms_event_kw_next(&it, &kw, &len)) > 0)
		kwv_push(v, (const uint8_t *)kw, (uint16_t)len);
	if (ret < 0)
		return ret;
	kwv_canon(v);
	return 0;
}

/* out = a op b for sorted unique lists; op 0 union, 1 difference. */
static void kwv_merge(struct kwv *out, const struct kwv *a, const struct kwv *b,
		      int diff)
{
	size_t i = 0, j = 0;

	out->n = 0;
	while (i < a->n || j < b->n) {
		int c = i == a->n   ? 1
			: j == b->n ? -1
				    : kw_qcmp(&a->v[i], &b->v[j]);
		if (c < 0) {
			kwv_push(out, a->v[i].p, a->v[i].len);
			i++;
		} else if (c > 0) {
			if (!diff)
				kwv_push(out, b->v[j].p, b->v[j].len);
			j++;
		} else {
			if (!diff)
				kwv_push(out, a->v[i].p, a->v[i].len);
			i++;
			j++;
		}
	}
}

static int kwv_equal(const struct kwv *a, const struct kwv *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++) {
		if (kw_qcmp(&a->v[i], &b->v[i]) != 0)
			return 0;
	}
	return 1;
}

/* ---- loading for change ----------------------------------------------------
 */

/*
 * Loaders: 0 with *r filled (a copy), MS_ENOTFOUND, or <0 with the
 * transaction failed.  *r is cleared first.
 */
static int user_load(struct ms_idx_txn *t, uint64_t id, struct user_rec *r)
{
	uint8_t k[8];
	MDB_val key = {.mv_size = 8, .mv_data = k}, v;
	int ret;

	memset(r, 0, sizeof(*r));
	be64(k, id);
	ret = db_get(t->rd.txn, t->idx, DB_USERS, k, 8, &v, &t->err);
	if (ret == 0)
		ret = user_decode(&key, &v, &r->u, &t->err);
	if (ret != 0)
		return ret == MS_ENOTFOUND ? ret : txn_fail(t, ret);
	memcpy(r->name, r->u.name, r->u.name_len);
	r->u.name = r->name;
	return 0;
}

static int user_store(struct ms_idx_txn *t, const struct ms_idx_user *u)
{
	uint8_t k[8], v[USER_FIXED + MS_EVENT_USER_NAME_MAX];

	be64(k, u->id);
	return db_put(t, DB_USERS, k, 8, v, user_encode(u, v));
}

static int mbox_load(struct ms_idx_txn *t, uint64_t id, struct mbox_rec *r)
{
	uint8_t k[8];
	MDB_val key = {.mv_size = 8, .mv_data = k}, v;
	int ret;

	memset(r, 0, sizeof(*r));
	be64(k, id);
	ret = db_get(t->rd.txn, t->idx, DB_MBOXES, k, 8, &v, &t->err);
	if (ret == 0)
		ret = mbox_decode(&key, &v, &r->m, &t->err);
	if (ret != 0)
		return ret == MS_ENOTFOUND ? ret : txn_fail(t, ret);
	memcpy(r->name, r->m.name, r->m.name_len);
	r->m.name = r->name;
	return 0;
}

static int mbox_store(struct ms_idx_txn *t, const struct ms_idx_mbox *m)
{
	uint8_t k[8], v[MBOX_FIXED + MS_EVENT_MBOX_NAME_MAX];

	be64(k, m->id);
	return db_put(t, DB_MBOXES, k, 8, v, mbox_encode(m, v));
}

static int body_load(struct ms_idx_txn *t, const uint8_t key32[32],
		     struct body_v *b)
{
	MDB_val key = {.mv_size = 32, .mv_data = (void *)key32}, v;
	int ret;

	memset(b, 0, sizeof(*b));
	ret = db_get(t->rd.txn, t->idx, DB_BODIES, key32, 32, &v, &t->err);

	if (ret == 0)
		ret = body_decode(&key, &v, b, &t->err);
	if (ret != 0)
		return ret == MS_ENOTFOUND ? ret : txn_fail(t, ret);
	return 0;
}

static int body_store(struct ms_idx_txn *t, const uint8_t key32[32],
		      const struct body_v *b)
{
	uint8_t v[BODY_SIZE];

	body_encode(b, v);
	return db_put(t, DB_BODIES, key32, 32, v, BODY_SIZE);
}

/* Add (or with negative numbers take) live bytes and records of seg. */
static int seg_add(struct ms_idx_txn *t, uint64_t seg, int64_t bytes,
		   int64_t records)
{
	uint8_t k[8], v[SEGLIVE_SIZE];
	uint64_t b = 0, r = 0;
	MDB_val val;
	int under = 0;
	int ret;

	be64(k, seg);
	ret = db_get(t->rd.txn, t->idx, DB_SEGLIVE, k, 8, &val, &t->err);
	if (ret == 0) {
		if (val.mv_size != SEGLIVE_SIZE)
			return txn_fail(
				t, damaged(DB_SEGLIVE, k, 8, "size", &t->err));
		b = ms_get64(val.mv_data);
		r = ms_get64((const uint8_t *)val.mv_data + 8);
	} else if (ret != MS_ENOTFOUND) {
		return txn_fail(t, ret);
	}
	b = sat_add(b, bytes, &under);
	r = sat_add(r, records, &under);
	if (under)
		return txn_fail(t, damaged(DB_SEGLIVE, k, 8,
					   "live bytes below zero", &t->err));
	if (r == 0) {
		if (b != 0)
			return txn_fail(t, damaged(DB_SEGLIVE, k, 8,
						   "bytes without records",
						   &t->err));
		return ret == 0 ? db_del(t, DB_SEGLIVE, k, 8) : 0;
	}
	ms_put64(v, b);
	ms_put64(v + 8, r);
	return db_put(t, DB_SEGLIVE, k, 8, v, SEGLIVE_SIZE);
}

/* One placement fewer of a body: present (refs) or expunged (xrefs). */
static int body_unref(struct ms_idx_txn *t, const uint8_t key[32], int expunged)
{
	struct body_v b;
	int ret = body_load(t, key, &b);

	if (ret == MS_ENOTFOUND)
		return txn_fail(t, damaged(DB_BODIES, key, 32,
					   "placed body missing", &t->err));
	if (ret != 0)
		return ret;
	uint64_t *n = expunged ? &b.xrefs : &b.refs;
	if (*n == 0)
		return txn_fail(t, damaged(DB_BODIES, key, 32,
					   "refcount below zero", &t->err));
	(*n)--;
	if (b.refs + b.xrefs == 0) {
		/* no placement left: an entry without location has nothing
		   to keep; one with a location stays for dedup until a
		   RETIRE drops its record */
		if (!body_has_loc(&b))
			return db_del(t, DB_BODIES, key, 32);
		if ((ret = seg_add(t, b.seg, -(int64_t)b.rec_len, -1)) < 0)
			return ret;
	}
	return body_store(t, key, &b);
}

/* ---- name buckets ----------------------------------------------------------
 */

static void name_key(uint8_t k[16], uint64_t user, const void *name, size_t len)
{
	be64(k, user);
	be64(k + 8, name_hash(name, len));
}

static int bucket_valid(const MDB_val *v)
{
	const uint8_t *p = v->mv_data;

	if (v->mv_size == 0 || v->mv_size % 8 != 0)
		return 0;
	for (size_t i = 8; i < v->mv_size; i += 8) {
		if (ms_get64(p + i - 8) >= ms_get64(p + i))
			return 0;
	}
	return 1;
}

/*
 * Find the mailbox of user named name: 0 with *m_r (borrowed), or
 * MS_ENOTFOUND, or MS_ECORRUPT.
 */
static int mbox_find(MDB_txn *txn, const struct ms_idx *idx, uint64_t user,
		     const char *name, size_t len, struct ms_idx_mbox *m_r,
		     const char **error_r)
{
	uint8_t k[16];
	MDB_val v;
	int ret;

	name_key(k, user, name, len);
	if ((ret = db_get(txn, idx, DB_MBOX_NAMES, k, 16, &v, error_r)) < 0)
		return ret;
	if (!bucket_valid(&v))
		return damaged(DB_MBOX_NAMES, k, 16, "bucket", error_r);
	for (size_t i = 0; i < v.mv_size; i += 8) {
		uint8_t mk[8];
		MDB_val key = {.mv_size = 8, .mv_data = mk}, mv;
		struct ms_idx_mbox m;

		memcpy(mk, (const uint8_t *)v.mv_data + i, 8);
		be64(mk, ms_get64(mk));
		ret = db_get(txn, idx, DB_MBOXES, mk, 8, &mv, error_r);
		if (ret == MS_ENOTFOUND)
			return damaged(DB_MBOX_NAMES, k, 16,
				       "names a missing mailbox", error_r);
		if (ret < 0 || (ret = mbox_decode(&key, &mv, &m, error_r)) < 0)
			return ret;
		if (m.user_id == user && m.name_len == len &&
		    memcmp(m.name, name, len) == 0) {
			*m_r = m;
			return 0;
		}
	}
	return MS_ENOTFOUND;
}

/* Add (add = 1) or remove mbox_id to the bucket of (user, name). */
static int mbox_name_set(struct ms_idx_txn *t, uint64_t user, const char *name,
			 size_t len, uint64_t id, int add)
{
	uint8_t k[16];
	MDB_val v;
	size_t at, n = 0;
	const uint8_t *p = NULL;
	int ret;

	name_key(k, user, name, len);
	ret = db_get(t->rd.txn, t->idx, DB_MBOX_NAMES, k, 16, &v, &t->err);
	if (ret == 0) {
		if (!bucket_valid(&v))
			return txn_fail(t, damaged(DB_MBOX_NAMES, k, 16,
						   "bucket", &t->err));
		p = v.mv_data;
		n = v.mv_size / 8;
	} else if (ret != MS_ENOTFOUND || !add) {
		return txn_fail(t, ret == MS_ENOTFOUND
					   ? damaged(DB_MBOX_NAMES, k, 16,
						     "missing", &t->err)
					   : ret);
	}
	for (at = 0; at < n && ms_get64(p + 8 * at) < id; at++)
		;
	ms_buf_reset(&t->copy);
	if ((ret = ms_buf_append(&t->copy, p, 8 * at)) < 0)
		return txn_fail(t, ret);
	if (add) {
		if (at < n && ms_get64(p + 8 * at) == id)
			return 0;
		if ((ret = ms_wr_u64(&t->copy, id)) < 0)
			return txn_fail(t, ret);
	} else {
		if (at == n || ms_get64(p + 8 * at) != id)
			return txn_fail(t, damaged(DB_MBOX_NAMES, k, 16,
						   "id missing", &t->err));
		at++;
	}
	if (at < n &&
	    (ret = ms_buf_append(&t->copy, p + 8 * at, 8 * (n - at))) < 0)
		return txn_fail(t, ret);
	if (t->copy.len == 0)
		return db_del(t, DB_MBOX_NAMES, k, 16);
	return db_put(t, DB_MBOX_NAMES, k, 16, t->copy.data, t->copy.len);
}

/* Subscription buckets: k x str, ascending, k >= 1. */
static int subs_valid(const MDB_val *v)
{
	const uint8_t *p = v->mv_data, *prev = NULL;
	size_t off = 0, prev_len = 0;

	if (v->mv_size == 0)
		return 0;
	while (off < v->mv_size) {
		if (v->mv_size - off < 2)
			return 0;
		size_t l = ms_get16(p + off);
		off += 2;
		if (l == 0 || l > MS_EVENT_MBOX_NAME_MAX ||
		    v->mv_size - off < l)
			return 0;
		if (prev != NULL && kw_cmp_raw(prev, prev_len, p + off, l) >= 0)
			return 0;
		prev = p + off;
		prev_len = l;
		off += l;
	}
	return 1;
}

static int subs_lookup(MDB_txn *txn, const struct ms_idx *idx, uint64_t user,
		       const char *name, size_t len, const char **error_r)
{
	uint8_t k[16];
	MDB_val v;
	int ret;

	name_key(k, user, name, len);
	ret = db_get(txn, idx, DB_SUBS, k, 16, &v, error_r);
	if (ret == MS_ENOTFOUND)
		return 0;
	if (ret < 0)
		return ret;
	if (!subs_valid(&v))
		return damaged(DB_SUBS, k, 16, "bucket", error_r);
	for (size_t off = 0; off < v.mv_size;) {
		const uint8_t *p = (const uint8_t *)v.mv_data + off;
		size_t l = ms_get16(p);
		if (l == len && memcmp(p + 2, name, len) == 0)
			return 1;
		off += 2 + l;
	}
	return 0;
}

static int subs_set(struct ms_idx_txn *t, uint64_t user, const char *name,
		    size_t len, int on)
{
	uint8_t k[16];
	MDB_val v = {.mv_size = 0, .mv_data = NULL};
	int ret, done = 0;

	name_key(k, user, name, len);
	ret = db_get(t->rd.txn, t->idx, DB_SUBS, k, 16, &v, &t->err);
	if (ret < 0 && ret != MS_ENOTFOUND)
		return txn_fail(t, ret);
	if (ret == 0 && !subs_valid(&v))
		return txn_fail(t, damaged(DB_SUBS, k, 16, "bucket", &t->err));
	ms_buf_reset(&t->copy);
	for (size_t off = 0; off < v.mv_size;) {
		const uint8_t *p = (const uint8_t *)v.mv_data + off;
		size_t l = ms_get16(p);
		int c = kw_cmp_raw(p + 2, l, (const uint8_t *)name, len);
		if (c == 0) {
			if (on)
				return 0; /* already */
			done = 1;
		} else {
			if (c > 0 && on && !done) {
				if ((ret = ms_wr_str(&t->copy, name, len)) < 0)
					return txn_fail(t, ret);
				done = 1;
			}
			if ((ret = ms_buf_append(&t->copy, p, 2 + l)) < 0)
				return txn_fail(t, ret);
		}
		off += 2 + l;
	}
	if (!done) {
		if (!on)
			return 0; /* not subscribed */
		if ((ret = ms_wr_str(&t->copy, name, len)) < 0)
			return txn_fail(t, ret);
	}
	if (t->copy.len == 0)
		return db_del(t, DB_SUBS, k, 16);
	return db_put(t, DB_SUBS, k, 16, t->copy.data, t->copy.len);
}

/* ---- apply: handlers
 * --------------------------------------------------------- */

static void anomaly_msg(struct ms_idx_txn *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void anomaly_msg(struct ms_idx_txn *t, const char *fmt, ...)
{
	char buf[MS_ERRF_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	t->err = ms_errf("%s", buf);
}

/* Say why the record has no effect; the value is MS_IDX_ANOMALY. */
#define anomaly(t, ...) (anomaly_msg(t, __VA_ARGS__), MS_IDX_ANOMALY)

static void modseq_key(uint8_t k[20], uint64_t mbox, uint64_t modseq,
		       uint32_t uid)
{
	be64(k, mbox);
	be64(k + 8, modseq);
	be32(k + 16, uid);
}

static int modseq_put(struct ms_idx_txn *t, uint64_t mbox, uint64_t modseq,
		      uint32_t uid, uint8_t kind)
{
	uint8_t k[20];

	modseq_key(k, mbox, modseq, uid);
	if (t->walk_modseq_put != NULL)
		return cur_put(t, t->walk_modseq_put, DB_MODSEQ, k, 20, &kind, 1,
			       0);
	return db_put(t, DB_MODSEQ, k, 20, &kind, 1);
}

static int modseq_del(struct ms_idx_txn *t, uint64_t mbox, uint64_t modseq,
		      uint32_t uid)
{
	uint8_t k[20];

	modseq_key(k, mbox, modseq, uid);
	if (t->walk_modseq != NULL)
		return cur_del(t, t->walk_modseq, DB_MODSEQ, k, 20);
	return db_del(t, DB_MODSEQ, k, 20);
}

static int apply_user_create(struct ms_idx_txn *t,
			     const struct ms_event_user_create *e)
{
	struct user_rec r;
	uint8_t v[8];
	MDB_val val;
	int ret;

	if ((ret = user_load(t, e->user_id, &r)) != MS_ENOTFOUND)
		return ret < 0 ? ret
			       : anomaly(t, "user %llu exists",
					 (unsigned long long)e->user_id);
	ret = db_get(t->rd.txn, t->idx, DB_USER_NAMES, e->name.s, e->name.len,
		     &val, &t->err);
	if (ret == 0)
		return anomaly(t, "user name taken by another user");
	if (ret != MS_ENOTFOUND)
		return txn_fail(t, ret);
	memset(&r, 0, sizeof(r));
	r.u.id = e->user_id;
	r.u.name = e->name.s;
	r.u.name_len = e->name.len;
	ms_put64(v, e->user_id);
	if ((ret = user_store(t, &r.u)) < 0 ||
	    (ret = db_put(t, DB_USER_NAMES, e->name.s, e->name.len, v, 8)) < 0)
		return ret;
	return 0;
}

/*
 * Drop a mailbox with its messages.  u (its owner, loaded) gets its quota
 * use and mailbox count lowered; the caller stores it.
 */
static int mbox_drop(struct ms_idx_txn *t, const struct mbox_rec *mb,
		     struct user_rec *u)
{
	uint8_t prefix[8];
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int ret, under = 0;

	be64(prefix, mb->m.id);
	for (int db = DB_MSGS; db <= DB_EXPUNGED; db++) {
		if ((ret = cursor_open(t, db, &c)) < 0)
			return ret;
		while ((ret = db_first(t, c, db, prefix, 8, 8, &k, &v)) > 0) {
			struct ms_idx_msg m;

			/* only the copied fields of m are used past the del */
			if ((ret = msg_decode(db, &k, &v, &m, &t->err)) < 0) {
				ret = txn_fail(t, ret);
				break;
			}
			if ((ret = mdb_cursor_del(c, 0)) != 0) {
				ret = txn_fail(
					t, map_err(ret, db_names[db], &t->err));
				break;
			}
			if ((ret = body_unref(t, m.body_key,
					      db == DB_EXPUNGED)) < 0 ||
			    (ret = seg_add(t, m.place_pos.seg,
					   -(int64_t)m.place_len, -1)) < 0)
				break;
		}
		mdb_cursor_close(c);
		if (ret < 0)
			return ret;
	}
	if ((ret = cursor_open(t, DB_MODSEQ, &c)) < 0)
		return ret;
	while ((ret = db_first(t, c, DB_MODSEQ, prefix, 8, 8, &k, NULL)) > 0) {
		if ((ret = mdb_cursor_del(c, 0)) != 0) {
			ret = txn_fail(t, map_err(ret, "modseq", &t->err));
			break;
		}
	}
	mdb_cursor_close(c);
	if (ret < 0)
		return ret;
	if ((ret = mbox_name_set(t, mb->m.user_id, mb->m.name, mb->m.name_len,
				 mb->m.id, 0)) < 0 ||
	    (ret = db_del(t, DB_MBOXES, prefix, 8)) < 0)
		return ret;
	u->u.use_bytes = sat_add(u->u.use_bytes, -(int64_t)mb->m.bytes, &under);
	u->u.use_messages =
		sat_add(u->u.use_messages, -(int64_t)mb->m.messages, &under);
	u->u.mailboxes = sat_add(u->u.mailboxes, -1, &under);
	if (under) {
		uint8_t uk[8];
		be64(uk, u->u.id);
		return txn_fail(t, damaged(DB_USERS, uk, 8,
					   "quota use below zero", &t->err));
	}
	return 0;
}

static int apply_user_delete(struct ms_idx_txn *t,
			     const struct ms_event_user_delete *e)
{
	struct user_rec u;
	uint8_t prefix[8];
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int ret;

	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? anomaly(t, "no user %llu",
					 (unsigned long long)e->user_id)
			       : ret;
	be64(prefix, e->user_id);
	/* each drop takes its id out of the buckets: take the first again */
	for (;;) {
		struct mbox_rec mb;
		uint64_t id = 0;

		if ((ret = cursor_open(t, DB_MBOX_NAMES, &c)) < 0)
			return ret;
		ret = db_first(t, c, DB_MBOX_NAMES, prefix, 8, 8, &k, &v);
		if (ret > 0 && !bucket_valid(&v))
			ret = txn_fail(t,
				       damaged(DB_MBOX_NAMES, k.mv_data,
					       k.mv_size, "bucket", &t->err));
		if (ret > 0)
			id = ms_get64(v.mv_data);
		mdb_cursor_close(c);
		if (ret <= 0)
			break;
		if ((ret = mbox_load(t, id, &mb)) != 0)
			return ret == MS_ENOTFOUND
				       ? txn_fail(t,
						  damaged(DB_MBOX_NAMES, prefix,
							  8, "missing mailbox",
							  &t->err))
				       : ret;
		/* else the drop would not empty this bucket: no endless loop */
		if (mb.m.user_id != e->user_id)
			return txn_fail(t, damaged(DB_MBOX_NAMES, prefix, 8,
						   "another user's mailbox",
						   &t->err));
		if ((ret = mbox_drop(t, &mb, &u)) < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	if ((ret = cursor_open(t, DB_SUBS, &c)) < 0)
		return ret;
	while ((ret = db_first(t, c, DB_SUBS, prefix, 8, 8, &k, NULL)) > 0) {
		if ((ret = mdb_cursor_del(c, 0)) != 0) {
			ret = txn_fail(t, map_err(ret, "subs", &t->err));
			break;
		}
	}
	mdb_cursor_close(c);
	if (ret < 0)
		return ret;
	if (u.u.mailboxes != 0 || u.u.use_bytes != 0 || u.u.use_messages != 0)
		return txn_fail(t, damaged(DB_USERS, prefix, 8,
					   "counters left after its mailboxes",
					   &t->err));
	if ((ret = db_del(t, DB_USER_NAMES, u.u.name, u.u.name_len)) < 0 ||
	    (ret = db_del(t, DB_USERS, prefix, 8)) < 0)
		return ret;
	return 0;
}

static int apply_mbox_create(struct ms_idx_txn *t,
			     const struct ms_event_mbox_create *e)
{
	struct user_rec u;
	struct mbox_rec mb;
	struct ms_idx_mbox found;
	int ret;

	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? anomaly(t, "no user %llu",
					 (unsigned long long)e->user_id)
			       : ret;
	if ((ret = mbox_load(t, e->mbox_id, &mb)) != MS_ENOTFOUND)
		return ret < 0 ? ret
			       : anomaly(t, "mailbox %llu exists",
					 (unsigned long long)e->mbox_id);
	ret = mbox_find(t->rd.txn, t->idx, e->user_id, e->name.s, e->name.len,
			&found, &t->err);
	if (ret == 0)
		return anomaly(t, "user %llu has a mailbox of that name",
			       (unsigned long long)e->user_id);
	if (ret != MS_ENOTFOUND)
		return txn_fail(t, ret);
	memset(&mb, 0, sizeof(mb));
	mb.m.id = e->mbox_id;
	mb.m.user_id = e->user_id;
	mb.m.uidvalidity = e->uidvalidity;
	mb.m.special_use = e->special_use;
	mb.m.uidnext = 1;
	mb.m.name = e->name.s;
	mb.m.name_len = e->name.len;
	u.u.mailboxes++;
	if ((ret = mbox_store(t, &mb.m)) < 0 ||
	    (ret = mbox_name_set(t, e->user_id, e->name.s, e->name.len,
				 e->mbox_id, 1)) < 0 ||
	    (ret = user_store(t, &u.u)) < 0)
		return ret;
	return 0;
}

/* Load the mailbox a record names, checking its owner. */
static int mbox_of(struct ms_idx_txn *t, uint64_t user, uint64_t mbox,
		   struct mbox_rec *mb)
{
	int ret = mbox_load(t, mbox, mb);

	if (ret == MS_ENOTFOUND)
		return anomaly(t, "no mailbox %llu", (unsigned long long)mbox);
	if (ret != 0)
		return ret;
	if (mb->m.user_id != user)
		return anomaly(t, "mailbox %llu belongs to user %llu, not %llu",
			       (unsigned long long)mbox,
			       (unsigned long long)mb->m.user_id,
			       (unsigned long long)user);
	return 0;
}

static int apply_mbox_update(struct ms_idx_txn *t,
			     const struct ms_event_mbox_update *e)
{
	static const uint8_t zero_guid[MS_EVENT_GUID_SIZE];
	struct mbox_rec mb;
	int ret;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	if (e->uidvalidity != 0)
		mb.m.uidvalidity = e->uidvalidity;
	/* raises only, like every other uidnext and modseq change: the
	   same index whatever order a replay meets them in */
	if (e->uidnext > mb.m.uidnext)
		mb.m.uidnext = e->uidnext;
	if (e->highestmodseq > mb.m.highestmodseq)
		mb.m.highestmodseq = e->highestmodseq;
	if (memcmp(e->guid, zero_guid, sizeof(zero_guid)) != 0)
		memcpy(mb.m.guid, e->guid, sizeof(mb.m.guid));
	return mbox_store(t, &mb.m);
}

static int apply_mbox_rename(struct ms_idx_txn *t,
			     const struct ms_event_mbox_rename *e)
{
	struct mbox_rec mb;
	struct ms_idx_mbox found;
	int ret;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	if (mb.m.name_len == e->new_name.len &&
	    memcmp(mb.m.name, e->new_name.s, e->new_name.len) == 0)
		return 0; /* same name */
	ret = mbox_find(t->rd.txn, t->idx, e->user_id, e->new_name.s,
			e->new_name.len, &found, &t->err);
	if (ret == 0)
		return anomaly(t, "user %llu has a mailbox of that name",
			       (unsigned long long)e->user_id);
	if (ret != MS_ENOTFOUND)
		return txn_fail(t, ret);
	if ((ret = mbox_name_set(t, e->user_id, mb.m.name, mb.m.name_len,
				 e->mbox_id, 0)) < 0 ||
	    (ret = mbox_name_set(t, e->user_id, e->new_name.s, e->new_name.len,
				 e->mbox_id, 1)) < 0)
		return ret;
	mb.m.name = e->new_name.s;
	mb.m.name_len = e->new_name.len;
	return mbox_store(t, &mb.m);
}

static int apply_mbox_delete(struct ms_idx_txn *t,
			     const struct ms_event_mbox_delete *e)
{
	struct mbox_rec mb;
	struct user_rec u;
	int ret;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? txn_fail(t, damaged(DB_MBOXES, &e->mbox_id, 8,
						     "owner missing", &t->err))
			       : ret;
	if ((ret = mbox_drop(t, &mb, &u)) < 0)
		return ret;
	return user_store(t, &u.u);
}

static int apply_mbox_subscribe(struct ms_idx_txn *t,
				const struct ms_event_mbox_subscribe *e)
{
	struct user_rec u;
	int ret;

	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? anomaly(t, "no user %llu",
					 (unsigned long long)e->user_id)
			       : ret;
	return subs_set(t, e->user_id, e->name.s, e->name.len, e->subscribed);
}

static int apply_quota(struct ms_idx_txn *t, const struct ms_event_quota *e)
{
	struct user_rec u;
	int ret;

	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? anomaly(t, "no user %llu",
					 (unsigned long long)e->user_id)
			       : ret;
	u.u.max_bytes = e->max_bytes;
	u.u.max_messages = e->max_messages;
	return user_store(t, &u.u);
}

static int apply_body(struct ms_idx_txn *t, struct ms_pos pos, uint64_t seq,
		      const struct ms_rec_hdr *hdr, const uint8_t *payload)
{
	uint8_t key[32];
	uint64_t plain_len, rec_len = MS_REC_HDR_SIZE + (uint64_t)hdr->len;
	struct body_v b;
	int ret;

	if (ms_body_peek(payload, hdr->len, key, &plain_len) < 0)
		return anomaly(t, "body payload too short");
	ret = body_load(t, key, &b);
	if (ret == MS_ENOTFOUND) {
		memset(&b, 0, sizeof(b));
	} else if (ret != 0) {
		return ret;
	} else if (b.refs + b.xrefs > 0) {
		/* moves (or gets its first location): its live bytes move
		   with it */
		if (body_has_loc(&b) &&
		    (ret = seg_add(t, b.seg, -(int64_t)b.rec_len, -1)) < 0)
			return ret;
		if ((ret = seg_add(t, pos.seg, (int64_t)rec_len, 1)) < 0)
			return ret;
	}
	b.seq = seq;
	b.seg = pos.seg;
	b.off = pos.off;
	b.rec_len = rec_len;
	b.plain_len = plain_len;
	return body_store(t, key, &b);
}

/*
 * Take the expunged message x (a copy: fixed fields only) out of the
 * expunged set: its entry, its modseq entry, its body's expunged ref,
 * its PLACE record's live bytes, and one from mb's expunged count (the
 * caller stores mb).
 */
static int expunged_remove(struct ms_idx_txn *t, const struct ms_idx_msg *x,
			   struct mbox_rec *mb)
{
	uint8_t k[12];
	int ret;

	be64(k, x->mbox_id);
	be32(k + 8, x->uid);
	if (mb->m.expunged == 0)
		return txn_fail(t,
				damaged(DB_MBOXES, k, 8,
					"expunged count below zero", &t->err));
	mb->m.expunged--;
	if ((ret = db_del(t, DB_EXPUNGED, k, 12)) < 0 ||
	    (ret = modseq_del(t, x->mbox_id, x->expunge_modseq, x->uid)) < 0 ||
	    (ret = body_unref(t, x->body_key, 1)) < 0 ||
	    (ret = seg_add(t, x->place_pos.seg, -(int64_t)x->place_len, -1)) <
		    0)
		return ret;
	return 0;
}

static int apply_place(struct ms_idx_txn *t, struct ms_pos pos, uint64_t seq,
		       const struct ms_rec_hdr *hdr,
		       const struct ms_event_place *e,
		       const struct ms_event *ev)
{
	struct mbox_rec mb;
	struct user_rec u;
	struct body_v b;
	struct ms_idx_msg m, x;
	uint8_t k[12];
	MDB_val v;
	int ret, restore = 0;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	be64(k, e->mbox_id);
	be32(k + 8, e->uid);
	/* every uid placed (present or expunged) is below uidnext, which
	   never goes back: a uid at or above it (every new message) is in
	   neither table, and only one below it needs looking for */
	for (int db = DB_MSGS; db <= DB_EXPUNGED && e->uid < mb.m.uidnext;
	     db++) {
		ret = db_get(t->rd.txn, t->idx, db, k, 12, &v, &t->err);
		if (ret == 0)
			return anomaly(t, "mailbox %llu uid %u %s",
				       (unsigned long long)e->mbox_id, e->uid,
				       db == DB_MSGS ? "exists"
						     : "was expunged");
		if (ret != MS_ENOTFOUND)
			return txn_fail(t, ret);
	}
	if (e->restore_uid != 0) {
		/* undelete; an expunged message that is not there is no
		   anomaly: a rebuild from a compacted log meets it (idx.h) */
		uint8_t xk[12];
		MDB_val key = {.mv_size = 12, .mv_data = xk};

		be64(xk, e->mbox_id);
		be32(xk + 8, e->restore_uid);
		ret = db_get(t->rd.txn, t->idx, DB_EXPUNGED, xk, 12, &v,
			     &t->err);
		if (ret == 0) {
			if ((ret = msg_decode(DB_EXPUNGED, &key, &v, &x,
					      &t->err)) < 0)
				return txn_fail(t, ret);
			x.keywords = NULL; /* points into the map */
			x.keywords_len = 0;
			restore = 1;
		} else if (ret != MS_ENOTFOUND) {
			return txn_fail(t, ret);
		}
	}
	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? txn_fail(t, damaged(DB_MBOXES, k, 8,
						     "owner missing", &t->err))
			       : ret;
	if (kwv_from_event(&t->new_kw, ev) < 0)
		return anomaly(t, "bad keyword list");

	/* no anomaly from here on */
	if (restore && (ret = expunged_remove(t, &x, &mb)) < 0)
		return ret;
	/* the feed no longer carries the old uid's expunge either */
	if (restore && x.expunge_modseq > mb.m.purged_modseq)
		mb.m.purged_modseq = x.expunge_modseq;
	ret = body_load(t, e->body_key, &b);
	if (ret == MS_ENOTFOUND)
		memset(&b, 0,
		       sizeof(b)); /* no location: its BODY was dropped */
	else if (ret != 0)
		return ret;
	memset(&m, 0, sizeof(m));
	m.mbox_id = e->mbox_id;
	m.uid = e->uid;
	m.modseq = e->modseq;
	m.flags = e->flags;
	m.received_date = e->received_date;
	m.save_date = e->save_date;
	memcpy(m.guid, e->guid, 16);
	memcpy(m.body_key, e->body_key, 32);
	m.physical_size = e->physical_size;
	m.virtual_size = e->virtual_size;
	m.place_seq = seq;
	m.place_pos = pos;
	m.place_len = MS_REC_HDR_SIZE + (uint64_t)hdr->len;
	if ((ret = msg_encode(&m, &t->new_kw, 0, &t->val)) < 0)
		return txn_fail(t, ret);
	if ((ret = db_put(t, DB_MSGS, k, 12, t->val.data, t->val.len)) < 0 ||
	    (ret = modseq_put(t, e->mbox_id, e->modseq, e->uid, 0)) < 0)
		return ret;
	if (b.refs + b.xrefs == 0 && body_has_loc(&b) &&
	    (ret = seg_add(t, b.seg, (int64_t)b.rec_len, 1)) < 0)
		return ret;
	b.refs++;
	if ((ret = body_store(t, e->body_key, &b)) < 0 ||
	    (ret = seg_add(t, pos.seg, (int64_t)m.place_len, 1)) < 0)
		return ret;
	mb.m.messages++;
	if (!(e->flags & MS_EVENT_FLAG_SEEN))
		mb.m.unseen++;
	mb.m.bytes += e->physical_size;
	mb.m.vbytes += e->virtual_size;
	if ((uint64_t)e->uid + 1 > mb.m.uidnext)
		mb.m.uidnext = (uint64_t)e->uid + 1;
	if (e->modseq > mb.m.highestmodseq)
		mb.m.highestmodseq = e->modseq;
	u.u.use_bytes += e->physical_size;
	u.u.use_messages++;
	if ((ret = mbox_store(t, &mb.m)) < 0 || (ret = user_store(t, &u.u)) < 0)
		return ret;
	return 0;
}

/* The new flags and keywords of m under a FLAGS record; 1 if changed. */
static int flags_change(struct ms_idx_txn *t, const struct ms_idx_msg *m,
			const struct ms_event_flags *e, uint32_t *flags_r)
{
	struct kwv *rec = &t->rec_kw, *old = &t->old_kw, *nw = &t->new_kw;

	kwv_from_msg(old, m);
	switch (e->mode) {
	case MS_EVENT_MODE_ADD:
		*flags_r = m->flags | e->flags;
		kwv_merge(nw, old, rec, 0);
		break;
	case MS_EVENT_MODE_REMOVE:
		*flags_r = m->flags & ~e->flags;
		kwv_merge(nw, old, rec, 1);
		break;
	default:
		*flags_r = e->flags;
		nw->n = 0;
		for (size_t i = 0; i < rec->n; i++)
			kwv_push(nw, rec->v[i].p, rec->v[i].len);
		break;
	}
	return *flags_r != m->flags || !kwv_equal(old, nw);
}

/*
 * Walk the present messages of mb in the ranges of ev (FLAGS or EXPUNGE):
 * fn(t, message) for each.  The first of each range is searched for;
 * with fn_stays (fn leaves the cursor on the message: a flag change) the
 * next is a step away; else (an expunge deletes the message under the
 * cursor) it is searched for again, not taken from where LMDB leaves a
 * cursor after a delete.
 */
typedef int range_fn(struct ms_idx_txn *t, struct mbox_rec *mb,
		     const struct ms_idx_msg *m, const struct ms_event *ev,
		     uint64_t seq, struct user_rec *u);

static int range_walk(struct ms_idx_txn *t, struct mbox_rec *mb,
		      const struct ms_event *ev, uint64_t seq,
		      struct user_rec *u, range_fn *fn, int fn_stays)
{
	const struct ms_event_ranges *rs = ev->type == MS_REC_FLAGS
						   ? &ev->u.flags.ranges
						   : &ev->u.expunge.ranges;
	MDB_cursor *c = NULL, *cm = NULL, *cp = NULL;
	int ret = 0;

	if ((ret = cursor_open(t, DB_MSGS, &c)) < 0)
		return ret;
	if ((ret = cursor_open(t, DB_MODSEQ, &cm)) < 0) {
		mdb_cursor_close(c);
		return ret;
	}
	if ((ret = cursor_open(t, DB_MODSEQ, &cp)) < 0) {
		mdb_cursor_close(cm);
		mdb_cursor_close(c);
		return ret;
	}
	t->walk_msgs = c;
	t->walk_modseq = cm;
	t->walk_modseq_put = cp;
	for (uint32_t i = 0; i < rs->n && ret >= 0; i++) {
		uint32_t lo, hi;
		uint64_t next;

		if (ms_event_range(ev, i, &lo, &hi) < 0) {
			ret = txn_fail(t, -EINVAL);
			break;
		}
		int at_prev = 0;
		for (next = lo; next <= hi;) {
			uint8_t k[12];
			MDB_val key = {.mv_size = 12, .mv_data = k}, raw, v;
			struct ms_idx_msg m;

			be64(k, mb->m.id);
			be32(k + 8, (uint32_t)next);
			/* the cursor on the message before next: a step
			   finds the same key as a search */
			int rc = mdb_cursor_get(c, &key, &raw,
						at_prev ? MDB_NEXT
							: MDB_SET_RANGE);
			if (rc == MDB_NOTFOUND)
				break;
			if (rc != 0) {
				ret = txn_fail(t, map_err(rc, db_names[DB_MSGS],
							  &t->err));
				break;
			}
			/* another mailbox's, or past the range */
			if (key.mv_size < 8 || memcmp(key.mv_data, k, 8) != 0 ||
			    msg_key_above(&key, hi))
				break;
			if ((ret = val_open(DB_MSGS, &key, &raw, &v,
					    &t->err)) < 0 ||
			    (ret = msg_decode(DB_MSGS, &key, &v, &m,
					      &t->err)) < 0) {
				ret = txn_fail(t, ret);
				break;
			}
			if ((ret = fn(t, mb, &m, ev, seq, u)) < 0)
				break;
			next = (uint64_t)m.uid + 1;
			at_prev = fn_stays;
		}
	}
	t->walk_msgs = NULL;
	t->walk_modseq = NULL;
	t->walk_modseq_put = NULL;
	mdb_cursor_close(cp);
	mdb_cursor_close(cm);
	mdb_cursor_close(c);
	return ret < 0 ? ret : 0;
}

static int flags_one(struct ms_idx_txn *t, struct mbox_rec *mb,
		     const struct ms_idx_msg *m, const struct ms_event *ev,
		     uint64_t seq, struct user_rec *u)
{
	const struct ms_event_flags *e = &ev->u.flags;
	struct ms_idx_msg nm = *m;
	uint8_t k[12];
	int ret;

	(void)seq;
	(void)u;
	be64(k, m->mbox_id);
	be32(k + 8, m->uid);
	if (!flags_change(t, m, e, &nm.flags))
		return 0;
	if (nm.modseq < e->modseq)
		nm.modseq = e->modseq;
	/* encode first: m points into the map */
	if ((ret = msg_encode(&nm, &t->new_kw, 0, &t->val)) < 0)
		return txn_fail(t, ret);
	if ((m->flags & MS_EVENT_FLAG_SEEN) && !(nm.flags & MS_EVENT_FLAG_SEEN))
		mb->m.unseen++;
	else if (!(m->flags & MS_EVENT_FLAG_SEEN) &&
		 (nm.flags & MS_EVENT_FLAG_SEEN)) {
		if (mb->m.unseen == 0)
			return txn_fail(t,
					damaged(DB_MBOXES, k, 8,
						"unseen below zero", &t->err));
		mb->m.unseen--;
	}
	if (nm.modseq != m->modseq &&
	    ((ret = modseq_del(t, m->mbox_id, m->modseq, m->uid)) < 0 ||
	     (ret = modseq_put(t, m->mbox_id, nm.modseq, m->uid, 0)) < 0))
		return ret;
	/* range_walk's cursor is at this message */
	return cur_put(t, t->walk_msgs, DB_MSGS, k, 12, t->val.data,
		       t->val.len, MDB_CURRENT);
}

static int apply_flags(struct ms_idx_txn *t, uint64_t seq,
		       const struct ms_event *ev)
{
	const struct ms_event_flags *e = &ev->u.flags;
	struct mbox_rec mb;
	int ret;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	if (kwv_from_event(&t->rec_kw, ev) < 0)
		return anomaly(t, "bad keyword list");
	if ((ret = range_walk(t, &mb, ev, seq, NULL, flags_one, 1)) < 0)
		return ret;
	if (e->modseq > mb.m.highestmodseq)
		mb.m.highestmodseq = e->modseq;
	return mbox_store(t, &mb.m);
}

static int expunge_one(struct ms_idx_txn *t, struct mbox_rec *mb,
		       const struct ms_idx_msg *m, const struct ms_event *ev,
		       uint64_t seq, struct user_rec *u)
{
	struct ms_idx_msg x = *m;
	uint8_t k[12];
	int ret, under = 0;

	x.expunge_modseq = m->modseq > ev->u.expunge.modseq
				   ? m->modseq
				   : ev->u.expunge.modseq;
	x.expunge_seq = seq;
	x.expunge_time = ev->u.expunge.time;
	/* encode first: m points into the map */
	if ((ret = msg_encode(&x, NULL, 1, &t->val)) < 0)
		return txn_fail(t, ret);
	be64(k, m->mbox_id);
	be32(k + 8, m->uid);
	mb->m.messages = sat_add(mb->m.messages, -1, &under);
	if (!(x.flags & MS_EVENT_FLAG_SEEN))
		mb->m.unseen = sat_add(mb->m.unseen, -1, &under);
	mb->m.bytes = sat_add(mb->m.bytes, -(int64_t)x.physical_size, &under);
	mb->m.vbytes = sat_add(mb->m.vbytes, -(int64_t)x.virtual_size, &under);
	mb->m.expunged++;
	u->u.use_bytes =
		sat_add(u->u.use_bytes, -(int64_t)x.physical_size, &under);
	u->u.use_messages = sat_add(u->u.use_messages, -1, &under);
	if (under)
		return txn_fail(t, damaged(DB_MBOXES, k, 8,
					   "counters below zero", &t->err));
	/* range_walk's cursor is at this message */
	int rc = mdb_cursor_del(t->walk_msgs, 0);
	if (rc != 0)
		return txn_fail(t, map_err(rc, db_names[DB_MSGS], &t->err));
	if ((ret = db_put(t, DB_EXPUNGED, k, 12, t->val.data, t->val.len)) <
		    0 ||
	    (ret = modseq_del(t, x.mbox_id, x.modseq, x.uid)) < 0 ||
	    (ret = modseq_put(t, x.mbox_id, x.expunge_modseq, x.uid, 1)) < 0)
		return ret;
	/* the body keeps its placement, now a restorable one */
	struct body_v b;
	if ((ret = body_load(t, x.body_key, &b)) != 0)
		return ret == MS_ENOTFOUND
			       ? txn_fail(t, damaged(DB_BODIES, x.body_key, 32,
						     "placed body missing",
						     &t->err))
			       : ret;
	if (b.refs == 0)
		return txn_fail(t, damaged(DB_BODIES, x.body_key, 32,
					   "refcount below zero", &t->err));
	b.refs--;
	b.xrefs++;
	return body_store(t, x.body_key, &b);
}

static int apply_expunge(struct ms_idx_txn *t, uint64_t seq,
			 const struct ms_event *ev)
{
	const struct ms_event_expunge *e = &ev->u.expunge;
	struct mbox_rec mb;
	struct user_rec u;
	int ret;

	if ((ret = mbox_of(t, e->user_id, e->mbox_id, &mb)) != 0)
		return ret;
	if ((ret = user_load(t, e->user_id, &u)) != 0)
		return ret == MS_ENOTFOUND
			       ? txn_fail(t, damaged(DB_MBOXES, &e->mbox_id, 8,
						     "owner missing", &t->err))
			       : ret;
	uint64_t before = mb.m.messages, want = 0;
	if ((ret = range_walk(t, &mb, ev, seq, &u, expunge_one, 0)) < 0)
		return ret;
	/* the writer names present uids only: any it did not find here
	   were purged, and their PLACE compacted away (idx.h) */
	for (uint32_t i = 0; i < e->ranges.n; i++) {
		uint32_t lo, hi;
		if (ms_event_range(ev, i, &lo, &hi) < 0)
			return txn_fail(t, -EINVAL);
		want += (uint64_t)hi - lo + 1;
	}
	if (before - mb.m.messages < want && e->modseq > mb.m.purged_modseq)
		mb.m.purged_modseq = e->modseq;
	if (e->modseq > mb.m.highestmodseq)
		mb.m.highestmodseq = e->modseq;
	/* the writer expunges placed uids only: uidnext is past them even
	   when compaction dropped their PLACE records (idx.h) */
	for (uint32_t i = 0; i < e->ranges.n; i++) {
		uint32_t lo, hi;
		if (ms_event_range(ev, i, &lo, &hi) < 0)
			return txn_fail(t, -EINVAL);
		if ((uint64_t)hi + 1 > mb.m.uidnext)
			mb.m.uidnext = (uint64_t)hi + 1;
	}
	if ((ret = mbox_store(t, &mb.m)) < 0)
		return ret;
	return user_store(t, &u.u);
}

/* Every expunged message whose expunge time is < before leaves. */
static int apply_purge(struct ms_idx_txn *t, const struct ms_event_purge *e)
{
	struct ms_buf keys;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int ret, rc;

	/* collect first: the removals write */
	ms_buf_init(&keys, 0);
	if ((ret = cursor_open(t, DB_EXPUNGED, &c)) < 0)
		goto out;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct ms_idx_msg m;
		MDB_val val;

		if ((ret = val_open(DB_EXPUNGED, &k, &v, &val, &t->err)) < 0 ||
		    (ret = msg_decode(DB_EXPUNGED, &k, &val, &m, &t->err)) <
			    0) {
			ret = txn_fail(t, ret);
			break;
		}
		if (m.expunge_time < e->before &&
		    (ret = ms_buf_append(&keys, k.mv_data, 12)) < 0) {
			ret = txn_fail(t, ret);
			break;
		}
	}
	mdb_cursor_close(c);
	if (ret < 0)
		goto out;
	if (rc != MDB_NOTFOUND) {
		ret = txn_fail(t, map_err(rc, "expunged", &t->err));
		goto out;
	}
	for (size_t i = 0; i < keys.len; i += 12) {
		MDB_val key = {.mv_size = 12, .mv_data = keys.data + i};
		struct ms_idx_msg x;
		struct mbox_rec mb;

		ret = db_get(t->rd.txn, t->idx, DB_EXPUNGED, key.mv_data, 12,
			     &v, &t->err);
		if (ret == 0)
			ret = msg_decode(DB_EXPUNGED, &key, &v, &x, &t->err);
		if (ret != 0) {
			ret = txn_fail(t, ret);
			break;
		}
		x.keywords = NULL; /* points into the map */
		x.keywords_len = 0;
		if ((ret = mbox_load(t, x.mbox_id, &mb)) != 0) {
			if (ret == MS_ENOTFOUND)
				ret = txn_fail(
					t, damaged(DB_EXPUNGED, key.mv_data, 12,
						   "no mailbox", &t->err));
			break;
		}
		/* the feed no longer carries this expunge */
		if (x.expunge_modseq > mb.m.purged_modseq)
			mb.m.purged_modseq = x.expunge_modseq;
		if ((ret = expunged_remove(t, &x, &mb)) < 0 ||
		    (ret = mbox_store(t, &mb.m)) < 0)
			break;
	}
out:
	ms_buf_free(&keys);
	return ret < 0 ? ret : 0;
}

/* Position a before (seg, off)? */
static int pos_before(uint64_t seg_a, uint64_t off_a, uint64_t seg,
		      uint64_t off)
{
	return seg_a < seg || (seg_a == seg && off_a < off);
}

/*
 * A compaction of one segment (idx.h, Compaction).  Unlike other records
 * a RETIRE with a bad BODY drop still applies its other drops: the
 * segment is compacted on disk whatever the index says.
 */
static int apply_retire(struct ms_idx_txn *t, uint64_t seq,
			const struct ms_event *ev)
{
	const struct ms_event_retire *e = &ev->u.retire;
	uint8_t k[8], cv[COMPACTED_SIZE];
	uint64_t times = 0, bad_off = 0;
	uint32_t bad = 0;
	MDB_val val;
	int ret;

	for (uint32_t i = 0; i < e->drops.n; i++) {
		struct ms_event_drop d;
		struct body_v b;

		if (ms_event_drop(ev, i, &d) < 0)
			return txn_fail(t, -EINVAL);
		if (d.type != MS_REC_BODY)
			continue; /* PLACE, NOOP: nothing refers to them */
		ret = body_load(t, d.key, &b);
		if (ret == MS_ENOTFOUND)
			continue;
		if (ret != 0)
			return ret;
		int at = body_has_loc(&b) && b.seg == e->seg && b.off == d.off;
		if (b.refs + b.xrefs > 0) {
			/* dropped while placed: a writer bug (if the entry
			   is elsewhere, the drop was not of its record) */
			if (at && bad++ == 0)
				bad_off = d.off;
			continue;
		}
		/* at an earlier record: a rebuild that did not see the
		   dropped record, which had moved the entry there */
		if (!at && !(body_has_loc(&b) &&
			     pos_before(b.seg, b.off, e->seg, d.off)))
			continue;
		if ((ret = db_del(t, DB_BODIES, d.key, 32)) < 0)
			return ret;
	}
	be64(k, e->seg);
	ret = db_get(t->rd.txn, t->idx, DB_COMPACTED, k, 8, &val, &t->err);
	if (ret == 0) {
		if (val.mv_size != COMPACTED_SIZE)
			return txn_fail(t, damaged(DB_COMPACTED, k, 8, "size",
						   &t->err));
		times = ms_get64((const uint8_t *)val.mv_data + 16);
	} else if (ret != MS_ENOTFOUND) {
		return txn_fail(t, ret);
	}
	ms_put64(cv, seq);
	ms_put64(cv + 8, e->sum);
	ms_put64(cv + 16, times + 1);
	if ((ret = db_put(t, DB_COMPACTED, k, 8, cv, COMPACTED_SIZE)) < 0)
		return ret;
	if (bad > 0)
		return anomaly(t,
			       "segment %llu: %u dropped BODY record(s) still "
			       "placed (first at offset %llu); kept",
			       (unsigned long long)e->seg, bad,
			       (unsigned long long)bad_off);
	return 0;
}

static int apply_rec(struct ms_idx_txn *t, uint64_t seq, struct ms_pos pos,
		     const struct ms_rec_hdr *hdr, const uint8_t *payload)
{
	struct ms_event ev;
	const char *derr = NULL;

	if (hdr->type == MS_REC_HOLE)
		return 0; /* only counted; its payload is not there */
	if (hdr->type == MS_REC_BODY)
		return apply_body(t, pos, seq, hdr, payload);
	if (ms_event_decode(hdr->type, payload, hdr->len, &ev, &derr) < 0)
		return anomaly(t, "payload does not decode: %s",
			       derr ? derr : "?");
	switch (ev.type) {
	case MS_REC_PLACE:
		return apply_place(t, pos, seq, hdr, &ev.u.place, &ev);
	case MS_REC_FLAGS:
		return apply_flags(t, seq, &ev);
	case MS_REC_EXPUNGE:
		return apply_expunge(t, seq, &ev);
	case MS_REC_MBOX_CREATE:
		return apply_mbox_create(t, &ev.u.mbox_create);
	case MS_REC_MBOX_RENAME:
		return apply_mbox_rename(t, &ev.u.mbox_rename);
	case MS_REC_MBOX_UPDATE:
		return apply_mbox_update(t, &ev.u.mbox_update);
	case MS_REC_MBOX_DELETE:
		return apply_mbox_delete(t, &ev.u.mbox_delete);
	case MS_REC_MBOX_SUBSCRIBE:
		return apply_mbox_subscribe(t, &ev.u.mbox_subscribe);
	case MS_REC_USER_CREATE:
		return apply_user_create(t, &ev.u.user_create);
	case MS_REC_USER_DELETE:
		return apply_user_delete(t, &ev.u.user_delete);
	case MS_REC_QUOTA:
		return apply_quota(t, &ev.u.quota);
	case MS_REC_RETIRE:
		return apply_retire(t, seq, &ev);
	case MS_REC_PURGE:
		return apply_purge(t, &ev.u.purge);
	case MS_REC_TIMELINE:
	case MS_REC_CHECKPOINT:
	case MS_REC_NOOP:
		return 0;
	default:
		return anomaly(t, "record type %u has no index meaning",
			       hdr->type);
	}
}

/* ---- transactions ----------------------------------------------------------
 */

static int txn_begin(struct ms_idx *idx, unsigned flags, MDB_txn **txn_r,
		     const char **error_r)
{
	int rc = mdb_txn_begin(idx->env, NULL, flags, txn_r);

	if (rc == MDB_MAP_RESIZED) {
		/* another process grew the map: adopt its size */
		if ((rc = mdb_env_set_mapsize(idx->env, 0)) == 0)
			rc = mdb_txn_begin(idx->env, NULL, flags, txn_r);
	}
	if (rc != 0)
		return map_err(rc, "begin", error_r);
	return 0;
}

int ms_idx_begin(struct ms_idx *idx, struct ms_idx_txn **txn_r)
{
	struct ms_idx_txn *t;
	MDB_txn *txn;
	struct idx_state st;
	int ret;

	if (idx->txn != NULL)
		return MS_ESTATE;
	if ((ret = txn_begin(idx, 0, &txn, NULL)) < 0)
		return ret;
	if ((ret = state_load(txn, idx, &st, NULL)) < 0) {
		mdb_txn_abort(txn);
		return ret;
	}
	t = ms_calloc(1, sizeof(*t));
	t->idx = idx;
	t->rd.idx = idx;
	t->rd.txn = txn;
	t->rd.owned = 0;
	t->st = st;
	ms_buf_init(&t->val, 0);
	ms_buf_init(&t->copy, 0);
	idx->txn = t;
	*txn_r = t;
	return 0;
}

/* Free t, which has ended; idx is its index (no longer in a transaction). */
static void txn_free(struct ms_idx *idx, struct ms_idx_txn *t)
{
	idx->txn = NULL;
	ms_buf_free(&t->val);
	ms_buf_free(&t->copy);
	free(t->rec_kw.v);
	free(t->old_kw.v);
	free(t->new_kw.v);
	free(t);
}

void ms_idx_abort(struct ms_idx_txn **txnp)
{
	struct ms_idx_txn *t = *txnp;

	if (t == NULL)
		return;
	*txnp = NULL;
	ms_assert(t->idx->borrowed == 0);
	mdb_txn_abort(t->rd.txn);
	txn_free(t->idx, t);
}

int ms_idx_apply(struct ms_idx_txn *t, uint64_t seq, struct ms_pos pos,
		 const struct ms_rec_hdr *hdr, const uint8_t *payload,
		 const char **error_r)
{
	int ret;

	if (t->failed) {
		if (error_r != NULL)
			*error_r = "index transaction failed before";
		return MS_ESTATE;
	}
	/*
	 * The log writes seals itself; the daemon never sees them.  So that
	 * a feed with or without them builds the same index, they change
	 * nothing, not even the applied position.
	 */
	if (hdr->type == MS_REC_SEAL)
		return 0;
	if (seq <= t->st.seq) {
		t->idx->skipped++;
		return MS_IDX_SKIPPED;
	}
	t->err = NULL;
	ret = apply_rec(t, seq, pos, hdr, payload);
	if (ret < 0) {
		t->failed = 1;
		if (error_r != NULL)
			*error_r = ms_errf("seq %llu (%s at %llu:%llu): %s",
					   (unsigned long long)seq,
					   ms_rec_type_name(hdr->type),
					   (unsigned long long)pos.seg,
					   (unsigned long long)pos.off,
					   t->err ? t->err : ms_strerror(ret));
		return ret;
	}
	t->st.seq = seq;
	t->st.pos = pos;
	t->st.records++;
	if (ret == MS_IDX_ANOMALY) {
		t->st.anomalies++;
		t->st.last_anomaly_seq = seq;
		if (error_r != NULL)
			*error_r = ms_errf("seq %llu (%s at %llu:%llu): %s",
					   (unsigned long long)seq,
					   ms_rec_type_name(hdr->type),
					   (unsigned long long)pos.seg,
					   (unsigned long long)pos.off, t->err);
	}
	return ret;
}

int ms_idx_commit(struct ms_idx_txn **txnp)
{
	struct ms_idx_txn *t = *txnp;
	uint8_t v[STATE_SIZE];
	int ret, rc;

	ms_assert(t->idx->borrowed == 0);
	if (t->failed) {
		ms_idx_abort(txnp);
		return MS_ESTATE;
	}
	ms_put64(v, t->st.seq);
	ms_put64(v + 8, t->st.pos.seg);
	ms_put64(v + 16, t->st.pos.off);
	ms_put64(v + 24, t->st.records);
	ms_put64(v + 32, t->st.anomalies);
	ms_put64(v + 40, t->st.last_anomaly_seq);
	if ((ret = db_put(t, DB_META, "state", 5, v, STATE_SIZE)) < 0) {
		ms_idx_abort(txnp);
		return ret;
	}
	*txnp = NULL;
	rc = mdb_txn_commit(t->rd.txn);
	txn_free(t->idx, t);
	return rc != 0 ? map_err(rc, "commit", NULL) : 0;
}

struct ms_idx_rd *ms_idx_txn_rd(struct ms_idx_txn *txn)
{
	return &txn->rd;
}

/* ---- open / close ----------------------------------------------------------
 */

static void boot_id(char out[BOOT_ID_MAX])
{
	FILE *f;

	memset(out, 0, BOOT_ID_MAX);
	if (test_boot_id != NULL) {
		strncpy(out, test_boot_id, BOOT_ID_MAX - 1);
		return;
	}
	f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (f == NULL)
		return;
	if (fgets(out, BOOT_ID_MAX, f) == NULL)
		out[0] = '\0';
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
}

static int put_open_mark(MDB_txn *txn, struct ms_idx *idx, int open,
			 const char **error_r)
{
	uint8_t v[OPEN_SIZE];
	char id[BOOT_ID_MAX];

	boot_id(id);
	ms_put64(v, (uint64_t)open);
	memcpy(v + 8, id, BOOT_ID_MAX);
	return raw_put(txn, idx, DB_META, "open", 4, v, OPEN_SIZE, error_r);
}

/* The open marker: refuse an index that was open across a reboot. */
static int check_open_mark(MDB_txn *txn, struct ms_idx *idx,
			   const char **error_r)
{
	char id[BOOT_ID_MAX];
	MDB_val v;
	int ret = db_get(txn, idx, DB_META, "open", 4, &v, error_r);

	if (ret == MS_ENOTFOUND)
		return 0;
	if (ret < 0)
		return ret;
	if (v.mv_size != OPEN_SIZE)
		return damaged(DB_META, "open", 4, "size", error_r);
	if (ms_get64(v.mv_data) == 0)
		return 0;
	boot_id(id);
	const char *was = (const char *)v.mv_data + 8;
	if (id[0] != '\0' && was[0] != '\0' &&
	    strncmp(id, was, BOOT_ID_MAX) != 0) {
		if (error_r != NULL)
			*error_r = "index was open when the machine went "
				   "down; unsynced pages may be lost: rebuild";
		return MS_ECORRUPT;
	}
	return 0;
}

/* The format entry of an existing index: magic and version. */
static int check_format(MDB_txn *txn, struct ms_idx *idx, const char **error_r)
{
	MDB_val key = {.mv_size = 6, .mv_data = "format"}, val;
	int rc = mdb_get(txn, idx->db[DB_META], &key, &val);

	if (rc == MDB_NOTFOUND) {
		*error_r = "index damaged: no format entry";
		return MS_ECORRUPT;
	}
	if (rc != 0)
		return map_err(rc, "meta", error_r);
	if (val.mv_size != FORMAT_SIZE ||
	    memcmp(val.mv_data, format_magic, sizeof(format_magic)) != 0 ||
	    ms_get32((const uint8_t *)val.mv_data + 12) != 0) {
		*error_r = "index damaged: bad format entry";
		return MS_ECORRUPT;
	}
	uint32_t version = ms_get32((const uint8_t *)val.mv_data + 8);
	if (version != MS_IDX_VERSION) {
		*error_r = ms_errf("index format version %u, this program "
				   "reads %u: rebuild",
				   version, MS_IDX_VERSION);
		return MS_EVERSION;
	}
	return 0;
}

static int open_dbs(MDB_txn *txn, struct ms_idx *idx, const char **error_r)
{
	MDB_dbi main_db;
	MDB_stat st;
	int rc, ret, fresh = 0;

	rc = mdb_dbi_open(txn, db_names[DB_META], 0, &idx->db[DB_META]);
	if (rc == MDB_NOTFOUND) {
		if ((rc = mdb_dbi_open(txn, NULL, 0, &main_db)) != 0 ||
		    (rc = mdb_stat(txn, main_db, &st)) != 0)
			return map_err(rc, "open", error_r);
		if (st.ms_entries != 0) {
			*error_r = "index: not an mstore index (no meta table)";
			return MS_ECORRUPT;
		}
		fresh = 1;
	} else if (rc != 0) {
		return map_err(rc, "open meta", error_r);
	}
	/* the version first: another version may have other tables */
	if (!fresh && (ret = check_format(txn, idx, error_r)) < 0)
		return ret;
	for (int db = 0; db < DB_COUNT; db++) {
		rc = mdb_dbi_open(txn, db_names[db], fresh ? MDB_CREATE : 0,
				  &idx->db[db]);
		if (rc == MDB_NOTFOUND) {
			*error_r = ms_errf("index damaged: no %s table",
					   db_names[db]);
			return MS_ECORRUPT;
		}
		if (rc != 0)
			return map_err(rc, db_names[db], error_r);
	}
	if (fresh) {
		uint8_t f[FORMAT_SIZE], s[STATE_SIZE];
		MDB_val key = {.mv_size = 6, .mv_data = "format"};
		MDB_val val = {.mv_size = FORMAT_SIZE, .mv_data = f};

		memcpy(f, format_magic, sizeof(format_magic));
		ms_put32(f + 8, MS_IDX_VERSION);
		ms_put32(f + 12, 0);
		if ((rc = mdb_put(txn, idx->db[DB_META], &key, &val, 0)) != 0)
			return map_err(rc, "meta", error_r);
		memset(s, 0, sizeof(s));
		return raw_put(txn, idx, DB_META, "state", 5, s, STATE_SIZE,
			       error_r);
	}
	struct idx_state state;
	return state_load(txn, idx, &state, error_r);
}

int ms_idx_open(const char *dir, uint64_t map_size, struct ms_idx **idx_r,
		const char **error_r)
{
	struct ms_idx *idx;
	MDB_envinfo info;
	MDB_txn *txn = NULL;
	const char *err = NULL;
	int rc, ret;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		*error_r = ms_errf("index: mkdir %s: %s", dir, strerror(-ret));
		return ret;
	}
	idx = ms_calloc(1, sizeof(*idx));
	if ((rc = mdb_env_create(&idx->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(idx->env, DB_COUNT + 4)) != 0) {
		ret = map_err(rc, "create", &err);
		goto fail;
	}
	rc = mdb_env_open(idx->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600);
	if (rc != 0) {
		ret = map_err(rc, dir, &err);
		goto fail;
	}
	if (map_size == 0)
		map_size = MS_IDX_MAP_SIZE_DEFAULT;
	if ((rc = mdb_env_info(idx->env, &info)) != 0) {
		ret = map_err(rc, "info", &err);
		goto fail;
	}
	if (map_size > info.me_mapsize &&
	    (rc = mdb_env_set_mapsize(idx->env, (size_t)map_size)) != 0) {
		ret = map_err(rc, "map size", &err);
		goto fail;
	}
	if ((ret = txn_begin(idx, 0, &txn, &err)) < 0)
		goto fail;
	if ((ret = open_dbs(txn, idx, &err)) < 0 ||
	    (ret = check_open_mark(txn, idx, &err)) < 0 ||
	    (ret = put_open_mark(txn, idx, 1, &err)) < 0)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0 || (rc = mdb_env_sync(idx->env, 1)) != 0) {
		ret = map_err(rc, "open", &err);
		goto fail;
	}
	*idx_r = idx;
	return 0;
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (idx->env != NULL)
		mdb_env_close(idx->env);
	free(idx);
	*error_r = ms_errf("%s: %s", dir, err ? err : ms_strerror(ret));
	return ret;
}

void ms_idx_close(struct ms_idx **idxp)
{
	struct ms_idx *idx = *idxp;
	MDB_txn *txn;
	const char *err = NULL;
	int rc;

	if (idx == NULL)
		return;
	*idxp = NULL;
	/* the caller ends its transaction and readers first */
	ms_assert(idx->nreaders == 0 && idx->txn == NULL);
	if (txn_begin(idx, 0, &txn, &err) == 0) {
		if (put_open_mark(txn, idx, 0, &err) == 0) {
			if ((rc = mdb_txn_commit(txn)) != 0)
				lmdb_msg(rc, "close", &err);
		} else {
			mdb_txn_abort(txn);
		}
	}
	if ((rc = mdb_env_sync(idx->env, 1)) != 0)
		lmdb_msg(rc, "sync", &err);
	if (err != NULL)
		msg_warn("index.close_failed error=%s", msg_q(err));
	mdb_env_close(idx->env);
	free(idx);
}

int ms_idx_sync(struct ms_idx *idx)
{
	int rc = mdb_env_sync(idx->env, 1);
	return rc != 0 ? map_err(rc, "sync", NULL) : 0;
}

int ms_idx_grow(struct ms_idx *idx, uint64_t map_size)
{
	MDB_envinfo info;
	int rc;

	if (idx->txn != NULL || idx->nreaders != 0)
		return MS_ESTATE;
	if ((rc = mdb_env_info(idx->env, &info)) != 0)
		return map_err(rc, "info", NULL);
	if (map_size == 0)
		map_size = 2 * (uint64_t)info.me_mapsize;
	if (map_size <= info.me_mapsize)
		return 0;
	if ((rc = mdb_env_set_mapsize(idx->env, (size_t)map_size)) != 0)
		return map_err(rc, "map size", NULL);
	return 0;
}

int ms_idx_applied(struct ms_idx *idx, uint64_t *seq_r, struct ms_pos *pos_r)
{
	struct idx_state st;
	MDB_txn *txn;
	int ret;

	if ((ret = txn_begin(idx, MDB_RDONLY, &txn, NULL)) < 0)
		return ret;
	ret = state_load(txn, idx, &st, NULL);
	mdb_txn_abort(txn);
	if (ret < 0)
		return ret;
	*seq_r = st.seq;
	*pos_r = st.pos;
	return 0;
}

/* ---- replay ----------------------------------------------------------------
 */

/* The index follows the store of id: record it the first time. */
static int check_store(struct ms_idx *idx, const uint8_t id[STORE_SIZE],
		       const char **error_r)
{
	MDB_txn *txn;
	MDB_val v;
	int ret, rc;

	if (idx->txn != NULL) {
		*error_r = "index: a write transaction is open";
		return MS_ESTATE;
	}
	if ((ret = txn_begin(idx, 0, &txn, error_r)) < 0)
		return ret;
	ret = db_get(txn, idx, DB_META, "store", 5, &v, error_r);
	if (ret == 0) {
		int same = v.mv_size == STORE_SIZE &&
			   memcmp(v.mv_data, id, STORE_SIZE) == 0;
		mdb_txn_abort(txn);
		if (!same) {
			*error_r = "index belongs to another store: rebuild";
			return MS_EMISMATCH;
		}
		return 0;
	}
	if (ret == MS_ENOTFOUND)
		ret = raw_put(txn, idx, DB_META, "store", 5, id, STORE_SIZE,
			      error_r);
	if (ret != 0) {
		mdb_txn_abort(txn);
		return ret;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return map_err(rc, "commit", error_r);
	return 0;
}

/* Apply up to the durable end from the applied position.  1: grow. */
static int replay(struct ms_idx *idx, struct ms_log *log, const char **error_r)
{
	struct ms_log_iter *it = NULL;
	struct ms_idx_txn *t = NULL;
	uint64_t seq;
	struct ms_pos pos;
	int ret, r;
	unsigned n = 0;

	if ((ret = ms_idx_applied(idx, &seq, &pos)) < 0) {
		*error_r = "index: cannot read the applied position";
		return ret;
	}
	if ((ret = ms_log_iter_new(log, pos, &it)) < 0) {
		*error_r = "index: cannot walk the log";
		return ret;
	}
	for (;;) {
		struct ms_pos rpos;
		struct ms_rec_hdr hdr;
		const uint8_t *payload;
		const char *err = NULL;

		r = ms_log_iter_next(it, &rpos, &hdr, &payload, &err);
		if (r <= 0) {
			if (r < 0)
				*error_r = err;
			break;
		}
		if (t == NULL && (ret = ms_idx_begin(idx, &t)) < 0) {
			*error_r = ms_errf("index: cannot begin a transaction: "
					   "%s",
					   ms_strerror(ret));
			goto out;
		}
		ret = ms_idx_apply(t, hdr.seq, rpos, &hdr, payload, &err);
		if (ret < 0) {
			ms_idx_abort(&t);
			if (ret == MS_ETOOBIG) {
				ret = 1;
				goto out;
			}
			*error_r = err;
			goto out;
		}
		if (ret == MS_IDX_ANOMALY)
			msg_warn("index.anomaly error=%s", msg_q(err));
		if (ret != MS_IDX_SKIPPED && ++n >= MS_IDX_BATCH) {
			if ((ret = ms_idx_commit(&t)) < 0) {
				if (ret == MS_ETOOBIG) {
					ret = 1;
					goto out;
				}
				*error_r = ms_errf("index: commit: %s",
						   ms_strerror(ret));
				goto out;
			}
			n = 0;
		}
	}
	/* the log's end, or a record bad on every copy: keep what came before
	 */
	if (t != NULL && (ret = ms_idx_commit(&t)) < 0) {
		if (ret == MS_ETOOBIG) {
			ret = 1;
			goto out;
		}
		*error_r = ms_errf("index: commit: %s", ms_strerror(ret));
		goto out;
	}
	ret = r;
out:
	ms_log_iter_free(&it);
	return ret;
}

int ms_idx_catch_up(struct ms_idx *idx, struct ms_log *log,
		    const char **error_r)
{
	int ret;

	if ((ret = check_store(idx, ms_log_meta(log)->store_id, error_r)) < 0)
		return ret;
	for (;;) {
		ret = replay(idx, log, error_r);
		if (ret != 1)
			return ret;
		/* the map filled up: grow it and go on where we stopped */
		if ((ret = ms_idx_grow(idx, 0)) < 0) {
			*error_r = "index: map full and cannot grow";
			return ret;
		}
	}
}

int ms_idx_rebuild(const char *dir, uint64_t map_size, struct ms_log *log,
		   const char **error_r)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	struct ms_idx *idx = NULL;
	int ret;

	for (size_t i = 0; i < MS_ARRAY_SIZE(files); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (unlink(path) < 0 && errno != ENOENT) {
			ret = -errno;
			*error_r = ms_errf("index: unlink %s: %s", path,
					   strerror(errno));
			return ret;
		}
	}
	if ((ret = ms_idx_open(dir, map_size, &idx, error_r)) < 0)
		return ret;
	ret = ms_idx_catch_up(idx, log, error_r);
	ms_idx_close(&idx);
	return ret;
}

/* ---- reading ---------------------------------------------------------------
 */

int ms_idx_read_begin(struct ms_idx *idx, struct ms_idx_rd **rd_r)
{
	MDB_txn *txn;
	int ret;

	if (idx->txn != NULL) {
		/* what is applied, committed or not: a failed transaction
		   lost some of it, and the committed state may be older
		   than what was answered */
		if (idx->txn->failed)
			return MS_ESTATE;
		idx->borrowed++;
		*rd_r = &idx->txn->rd;
		return 0;
	}
	if ((ret = txn_begin(idx, MDB_RDONLY, &txn, NULL)) < 0)
		return ret;
	struct ms_idx_rd *rd = ms_calloc(1, sizeof(*rd));
	rd->idx = idx;
	rd->txn = txn;
	rd->owned = 1;
	idx->nreaders++;
	*rd_r = rd;
	return 0;
}

void ms_idx_read_end(struct ms_idx_rd **rdp)
{
	struct ms_idx_rd *rd = *rdp;

	if (rd == NULL)
		return;
	*rdp = NULL;
	if (!rd->owned) {
		ms_assert(rd->idx->borrowed > 0);
		rd->idx->borrowed--;
		return;
	}
	mdb_txn_abort(rd->txn);
	rd->idx->nreaders--;
	free(rd);
}

int ms_idx_user_get(struct ms_idx_rd *rd, uint64_t user_id,
		    struct ms_idx_user *u_r)
{
	uint8_t k[8];
	MDB_val key = {.mv_size = 8, .mv_data = k}, v;
	int ret;

	be64(k, user_id);
	if ((ret = db_get(rd->txn, rd->idx, DB_USERS, k, 8, &v, NULL)) < 0)
		return ret;
	return user_decode(&key, &v, u_r, NULL);
}

int ms_idx_user_by_name(struct ms_idx_rd *rd, const char *name, size_t len,
			struct ms_idx_user *u_r)
{
	struct ms_idx_user u;
	MDB_val v;
	int ret;

	if (len == 0 || len > MS_EVENT_USER_NAME_MAX)
		return MS_ENOTFOUND;
	if ((ret = db_get(rd->txn, rd->idx, DB_USER_NAMES, name, len, &v,
			  NULL)) < 0)
		return ret;
	if (v.mv_size != 8)
		return MS_ECORRUPT;
	if ((ret = ms_idx_user_get(rd, ms_get64(v.mv_data), &u)) < 0)
		return ret == MS_ENOTFOUND ? MS_ECORRUPT : ret;
	if (u.name_len != len || memcmp(u.name, name, len) != 0)
		return MS_ECORRUPT;
	*u_r = u;
	return 0;
}

int ms_idx_mbox_get(struct ms_idx_rd *rd, uint64_t mbox_id,
		    struct ms_idx_mbox *m_r)
{
	uint8_t k[8];
	MDB_val key = {.mv_size = 8, .mv_data = k}, v;
	struct ms_idx_mbox m;
	int ret;

	be64(k, mbox_id);
	if ((ret = db_get(rd->txn, rd->idx, DB_MBOXES, k, 8, &v, NULL)) < 0 ||
	    (ret = mbox_decode(&key, &v, &m, NULL)) < 0)
		return ret;
	ret = subs_lookup(rd->txn, rd->idx, m.user_id, m.name, m.name_len,
			  NULL);
	if (ret < 0)
		return ret;
	m.subscribed = ret;
	*m_r = m;
	return 0;
}

int ms_idx_mbox_by_name(struct ms_idx_rd *rd, uint64_t user_id,
			const char *name, size_t len, struct ms_idx_mbox *m_r)
{
	struct ms_idx_mbox m;
	int ret;

	if (len == 0 || len > MS_EVENT_MBOX_NAME_MAX)
		return MS_ENOTFOUND;
	if ((ret = mbox_find(rd->txn, rd->idx, user_id, name, len, &m, NULL)) <
	    0)
		return ret;
	ret = subs_lookup(rd->txn, rd->idx, user_id, name, len, NULL);
	if (ret < 0)
		return ret;
	m.subscribed = ret;
	*m_r = m;
	return 0;
}

static int msg_get(struct ms_idx_rd *rd, int db, uint64_t mbox_id, uint32_t uid,
		   struct ms_idx_msg *m_r)
{
	uint8_t k[12];
	MDB_val key = {.mv_size = 12, .mv_data = k}, v;
	int ret;

	be64(k, mbox_id);
	be32(k + 8, uid);
	if ((ret = db_get(rd->txn, rd->idx, db, k, 12, &v, NULL)) < 0)
		return ret;
	return msg_decode(db, &key, &v, m_r, NULL);
}

int ms_idx_msg_get(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t uid,
		   struct ms_idx_msg *m_r)
{
	return msg_get(rd, DB_MSGS, mbox_id, uid, m_r);
}

int ms_idx_expunged_get(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t uid,
			struct ms_idx_msg *m_r)
{
	return msg_get(rd, DB_EXPUNGED, mbox_id, uid, m_r);
}

/* The compacted entry of seg: 1 with it in s, 0 if none, <0. */
static int compacted_get(MDB_txn *txn, const struct ms_idx *idx, uint64_t seg,
			 struct ms_idx_seg *s)
{
	uint8_t k[8];
	MDB_val v;
	int ret;

	be64(k, seg);
	if ((ret = db_get(txn, idx, DB_COMPACTED, k, 8, &v, NULL)) < 0)
		return ret == MS_ENOTFOUND ? 0 : ret;
	if (v.mv_size != COMPACTED_SIZE)
		return MS_ECORRUPT;
	s->compacted = 1;
	s->compact_seq = ms_get64(v.mv_data);
	s->sum = ms_get64((const uint8_t *)v.mv_data + 8);
	s->compactions = ms_get64((const uint8_t *)v.mv_data + 16);
	return 1;
}

int ms_idx_body_get(struct ms_idx_rd *rd, const uint8_t key[32],
		    struct ms_idx_body *b_r)
{
	MDB_val k = {.mv_size = 32, .mv_data = (void *)key}, v;
	struct body_v b;
	int ret;

	if ((ret = db_get(rd->txn, rd->idx, DB_BODIES, key, 32, &v, NULL)) <
		    0 ||
	    (ret = body_decode(&k, &v, &b, NULL)) < 0)
		return ret;
	if (!body_has_loc(&b))
		return MS_ENOTFOUND; /* no record to read or share */
	memcpy(b_r->key, key, 32);
	b_r->seq = b.seq;
	b_r->pos.seg = b.seg;
	b_r->pos.off = b.off;
	b_r->rec_len = b.rec_len;
	b_r->plain_len = b.plain_len;
	b_r->refcount = b.refs;
	b_r->expunged_refs = b.xrefs;
	return 0;
}

int ms_idx_subscribed(struct ms_idx_rd *rd, uint64_t user_id, const char *name,
		      size_t len)
{
	if (len == 0 || len > MS_EVENT_MBOX_NAME_MAX)
		return 0;
	return subs_lookup(rd->txn, rd->idx, user_id, name, len, NULL);
}

int ms_idx_seg_get(struct ms_idx_rd *rd, uint64_t seg, struct ms_idx_seg *s_r)
{
	struct ms_idx_seg s = {.seg = seg};
	uint8_t k[8];
	MDB_val v;
	int ret;

	be64(k, seg);
	ret = db_get(rd->txn, rd->idx, DB_SEGLIVE, k, 8, &v, NULL);
	if (ret == 0) {
		if (v.mv_size != SEGLIVE_SIZE)
			return MS_ECORRUPT;
		s.live_bytes = ms_get64(v.mv_data);
		s.live_records = ms_get64((const uint8_t *)v.mv_data + 8);
	} else if (ret != MS_ENOTFOUND) {
		return ret;
	}
	if ((ret = compacted_get(rd->txn, rd->idx, seg, &s)) < 0)
		return ret;
	*s_r = s;
	return 0;
}

int ms_idx_stats(struct ms_idx_rd *rd, struct ms_idx_stats *st_r)
{
	struct ms_idx_stats s;
	struct idx_state st;
	MDB_envinfo info;
	MDB_stat ms;
	int ret, rc;

	memset(&s, 0, sizeof(s));
	const struct {
		int db;
		uint64_t *n;
	} counts[] = {
		{DB_USERS, &s.users},
		{DB_MBOXES, &s.mailboxes},
		{DB_MSGS, &s.messages},
		{DB_EXPUNGED, &s.expunged},
		{DB_BODIES, &s.bodies},
		{DB_SEGLIVE, &s.live_segments},
		{DB_COMPACTED, &s.compacted_segments},
	};
	if ((ret = state_load(rd->txn, rd->idx, &st, NULL)) < 0)
		return ret;
	s.committed_seq = st.seq;
	if (!rd->owned && rd->idx->txn != NULL && &rd->idx->txn->rd == rd)
		st = rd->idx->txn->st; /* what the commit will write */
	s.applied_seq = st.seq;
	s.applied_pos = st.pos;
	s.records = st.records;
	s.anomalies = st.anomalies;
	s.last_anomaly_seq = st.last_anomaly_seq;
	for (size_t i = 0; i < MS_ARRAY_SIZE(counts); i++) {
		if ((rc = mdb_stat(rd->txn, rd->idx->db[counts[i].db], &ms)) !=
		    0)
			return map_err(rc, "stat", NULL);
		*counts[i].n = ms.ms_entries;
	}
	if ((rc = mdb_env_info(rd->idx->env, &info)) != 0 ||
	    (rc = mdb_env_stat(rd->idx->env, &ms)) != 0)
		return map_err(rc, "info", NULL);
	s.map_size = info.me_mapsize;
	s.map_used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	s.skipped = rd->idx->skipped;
	*st_r = s;
	return 0;
}

/* ---- iterators -------------------------------------------------------------
 */

enum it_kind {
	IT_USERS,
	IT_MBOXES,
	IT_MSGS,
	IT_CHANGES,
	IT_EXPUNGED,
	IT_SUBS,
	IT_SEGS
};

struct ms_idx_iter {
	enum it_kind kind;
	int db;
	struct ms_idx_rd *rd;
	MDB_cursor *cur;
	uint8_t start[20];
	size_t start_len, prefix_len;
	int started, pending, done;
	uint64_t id, since;
	uint32_t hi;
	/* mboxes, subs: the bucket being walked (borrowed), its name
	   hash (the key's last 8 bytes) */
	const uint8_t *bucket;
	size_t bucket_len, bucket_off;
	uint64_t bucket_hash;
};

static int iter_new(struct ms_idx_rd *rd, enum it_kind kind, int db,
		    const uint8_t *start, size_t start_len, size_t prefix_len,
		    struct ms_idx_iter **it_r)
{
	struct ms_idx_iter *it;
	int rc;

	it = ms_calloc(1, sizeof(*it));
	it->kind = kind;
	it->db = db;
	it->rd = rd;
	if (start_len > 0)
		memcpy(it->start, start, start_len);
	it->start_len = start_len;
	it->prefix_len = prefix_len;
	it->hi = UINT32_MAX;
	if ((rc = mdb_cursor_open(rd->txn, rd->idx->db[db], &it->cur)) != 0) {
		free(it);
		return map_err(rc, "cursor", NULL);
	}
	*it_r = it;
	return 0;
}

void ms_idx_iter_free(struct ms_idx_iter **itp)
{
	struct ms_idx_iter *it = *itp;

	if (it == NULL)
		return;
	*itp = NULL;
	mdb_cursor_close(it->cur);
	free(it);
}

/* The next entry in the iterator's prefix: 1 (k, v checked), 0, <0.
   With v NULL only the key is read: the value is neither checked nor
   touched. */
static int iter_step_err(struct ms_idx_iter *it, MDB_val *k, MDB_val *v,
			 const char **error_r)
{
	MDB_val key, val;
	int rc, ret;

	if (it->done)
		return 0;
	if (!it->started) {
		it->started = 1;
		key.mv_data = it->start;
		key.mv_size = it->start_len;
		rc = mdb_cursor_get(it->cur, &key, &val,
				    it->start_len ? MDB_SET_RANGE : MDB_FIRST);
	} else if (it->pending) {
		it->pending = 0;
		rc = mdb_cursor_get(it->cur, &key, &val, MDB_GET_CURRENT);
	} else {
		rc = mdb_cursor_get(it->cur, &key, &val, MDB_NEXT);
	}
	if (rc == MDB_NOTFOUND) {
		it->done = 1;
		return 0;
	}
	if (rc != 0)
		return map_err(rc, "cursor", NULL);
	if (key.mv_size < it->prefix_len ||
	    memcmp(key.mv_data, it->start, it->prefix_len) != 0) {
		it->done = 1;
		return 0;
	}
	if (it->kind == IT_MSGS && msg_key_above(&key, it->hi)) {
		it->done = 1;
		return 0;
	}
	if (v != NULL && (ret = val_open(it->db, &key, &val, v, error_r)) < 0)
		return ret;
	/* the range's last uid: no step past it to find that out (a set
	   of single uids takes one cursor move per uid, not two) */
	if (it->kind == IT_MSGS && key.mv_size == 12 &&
	    get_be32((const uint8_t *)key.mv_data + 8) == it->hi)
		it->done = 1;
	*k = key;
	return 1;
}

static int iter_step(struct ms_idx_iter *it, MDB_val *k, MDB_val *v)
{
	return iter_step_err(it, k, v, NULL);
}

int ms_idx_users_iter(struct ms_idx_rd *rd, struct ms_idx_iter **it_r)
{
	return iter_new(rd, IT_USERS, DB_USERS, NULL, 0, 0, it_r);
}

int ms_idx_users_iter_from(struct ms_idx_rd *rd, uint64_t from_id,
			   struct ms_idx_iter **it_r)
{
	uint8_t k[8];

	be64(k, from_id);
	return iter_new(rd, IT_USERS, DB_USERS, k, 8, 0, it_r);
}

int ms_idx_users_next(struct ms_idx_iter *it, struct ms_idx_user *u_r)
{
	MDB_val k, v;
	int ret;

	if (it->kind != IT_USERS)
		return MS_ESTATE;
	if ((ret = iter_step(it, &k, &v)) <= 0)
		return ret;
	if ((ret = user_decode(&k, &v, u_r, NULL)) < 0)
		return ret;
	return 1;
}

int ms_idx_mboxes_iter(struct ms_idx_rd *rd, uint64_t user_id,
		       struct ms_idx_iter **it_r)
{
	uint8_t k[8];

	be64(k, user_id);
	return iter_new(rd, IT_MBOXES, DB_MBOX_NAMES, k, 8, 8, it_r);
}

int ms_idx_mboxes_iter_after(struct ms_idx_rd *rd, uint64_t user_id,
			     const char *name, size_t len,
			     struct ms_idx_iter **it_r)
{
	uint8_t k[16];
	uint64_t h = name_hash(name, len);
	int ret;

	be64(k, user_id);
	be64(k + 8, h + 1);
	if ((ret = iter_new(rd, IT_MBOXES, DB_MBOX_NAMES, k, 16, 8, it_r)) < 0)
		return ret;
	if (h == UINT64_MAX)
		(*it_r)->done = 1;
	return 0;
}

uint64_t ms_idx_mboxes_bucket(const struct ms_idx_iter *it)
{
	return it->bucket_hash;
}

int ms_idx_mboxes_next(struct ms_idx_iter *it, struct ms_idx_mbox *m_r)
{
	MDB_val k, v;
	int ret;

	if (it->kind != IT_MBOXES)
		return MS_ESTATE;
	while (it->bucket_off >= it->bucket_len) {
		if ((ret = iter_step(it, &k, &v)) <= 0)
			return ret;
		if (k.mv_size != 16 || !bucket_valid(&v))
			return MS_ECORRUPT;
		it->bucket = v.mv_data;
		it->bucket_len = v.mv_size;
		it->bucket_off = 0;
		it->bucket_hash = get_be64((const uint8_t *)k.mv_data + 8);
	}
	uint64_t id = ms_get64(it->bucket + it->bucket_off);
	it->bucket_off += 8;
	ret = ms_idx_mbox_get(it->rd, id, m_r);
	if (ret < 0)
		return ret == MS_ENOTFOUND ? MS_ECORRUPT : ret;
	return 1;
}

int ms_idx_msgs_iter(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t lo,
		     uint32_t hi, struct ms_idx_iter **it_r)
{
	uint8_t k[12];
	int ret;

	be64(k, mbox_id);
	be32(k + 8, lo);
	if ((ret = iter_new(rd, IT_MSGS, DB_MSGS, k, 12, 8, it_r)) < 0)
		return ret;
	(*it_r)->hi = hi;
	if (lo > hi)
		(*it_r)->done = 1;
	return 0;
}

int ms_idx_msgs_range(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t lo,
		      uint32_t hi, struct ms_idx_iter **itp)
{
	struct ms_idx_iter *it = *itp;

	if (it == NULL)
		return ms_idx_msgs_iter(rd, mbox_id, lo, hi, itp);
	if (it->kind != IT_MSGS || it->rd != rd)
		return MS_ESTATE;
	be64(it->start, mbox_id);
	be32(it->start + 8, lo);
	it->hi = hi;
	it->started = 0;
	it->pending = 0;
	it->done = lo > hi;
	return 0;
}

int ms_idx_msgs_next(struct ms_idx_iter *it, struct ms_idx_msg *m_r)
{
	struct ms_idx_msg m;
	MDB_val k, v;
	int ret;

	if (it->kind != IT_MSGS)
		return MS_ESTATE;
	if ((ret = iter_step(it, &k, &v)) <= 0)
		return ret;
	/* iter_step stopped at a key past the range */
	if ((ret = msg_decode(DB_MSGS, &k, &v, &m, NULL)) < 0)
		return ret;
	*m_r = m;
	return 1;
}

int ms_idx_msgs_next_uid(struct ms_idx_iter *it, uint32_t *uid_r)
{
	MDB_val k;
	int ret;

	if (it->kind != IT_MSGS)
		return MS_ESTATE;
	if ((ret = iter_step_err(it, &k, NULL, NULL)) <= 0)
		return ret;
	if (k.mv_size != 12)
		return MS_ECORRUPT;
	*uid_r = get_be32((const uint8_t *)k.mv_data + 8);
	return 1;
}

int ms_idx_changes_iter(struct ms_idx_rd *rd, uint64_t mbox_id,
			uint64_t since_modseq, struct ms_idx_iter **it_r)
{
	uint8_t k[20];
	int ret;

	modseq_key(k, mbox_id, since_modseq + 1, 0);
	if ((ret = iter_new(rd, IT_CHANGES, DB_MODSEQ, k, 20, 8, it_r)) < 0)
		return ret;
	if (since_modseq == UINT64_MAX)
		(*it_r)->done = 1;
	return 0;
}

int ms_idx_changes_next(struct ms_idx_iter *it, struct ms_idx_change *c_r)
{
	struct ms_idx_change c;
	MDB_val k, v;
	int ret;

	if (it->kind != IT_CHANGES)
		return MS_ESTATE;
	if ((ret = iter_step(it, &k, &v)) <= 0)
		return ret;
	if (k.mv_size != 20 || v.mv_size != 1 ||
	    *(const uint8_t *)v.mv_data > 1)
		return MS_ECORRUPT;
	memset(&c, 0, sizeof(c));
	c.modseq = get_be64((const uint8_t *)k.mv_data + 8);
	c.uid_lo = c.uid_hi = get_be32((const uint8_t *)k.mv_data + 16);
	if (*(const uint8_t *)v.mv_data == 0) {
		ret = ms_idx_msg_get(it->rd, get_be64(k.mv_data), c.uid_lo,
				     &c.msg);
		if (ret < 0)
			return ret == MS_ENOTFOUND ? MS_ECORRUPT : ret;
		if (c.msg.modseq != c.modseq)
			return MS_ECORRUPT;
		*c_r = c;
		return 1;
	}
	/* expunged: take the following uids of the same modseq along */
	c.is_expunge = 1;
	for (;;) {
		ret = iter_step(it, &k, &v);
		if (ret < 0)
			return ret;
		if (ret == 0)
			break;
		if (k.mv_size != 20 || v.mv_size != 1)
			return MS_ECORRUPT;
		if (*(const uint8_t *)v.mv_data != 1 ||
		    get_be64((const uint8_t *)k.mv_data + 8) != c.modseq ||
		    get_be32((const uint8_t *)k.mv_data + 16) !=
			    (uint64_t)c.uid_hi + 1) {
			it->pending = 1;
			break;
		}
		c.uid_hi++;
	}
	*c_r = c;
	return 1;
}

int ms_idx_expunged_iter(struct ms_idx_rd *rd, uint64_t mbox_id, uint64_t since,
			 struct ms_idx_iter **it_r)
{
	uint8_t k[8];
	int ret;

	be64(k, mbox_id);
	if ((ret = iter_new(rd, IT_EXPUNGED, DB_EXPUNGED, k, 8, 8, it_r)) < 0)
		return ret;
	(*it_r)->since = since;
	return 0;
}

int ms_idx_expunged_next(struct ms_idx_iter *it, struct ms_idx_msg *m_r)
{
	struct ms_idx_msg m;
	MDB_val k, v;
	int ret;

	if (it->kind != IT_EXPUNGED)
		return MS_ESTATE;
	for (;;) {
		if ((ret = iter_step(it, &k, &v)) <= 0)
			return ret;
		if ((ret = msg_decode(DB_EXPUNGED, &k, &v, &m, NULL)) < 0)
			return ret;
		if (m.expunge_time >= it->since) {
			*m_r = m;
			return 1;
		}
	}
}

int ms_idx_subs_iter(struct ms_idx_rd *rd, uint64_t user_id,
		     struct ms_idx_iter **it_r)
{
	uint8_t k[8];

	be64(k, user_id);
	return iter_new(rd, IT_SUBS, DB_SUBS, k, 8, 8, it_r);
}

int ms_idx_subs_next(struct ms_idx_iter *it, const char **name_r, size_t *len_r)
{
	MDB_val k, v;
	int ret;

	if (it->kind != IT_SUBS)
		return MS_ESTATE;
	while (it->bucket_off >= it->bucket_len) {
		if ((ret = iter_step(it, &k, &v)) <= 0)
			return ret;
		if (k.mv_size != 16 || !subs_valid(&v))
			return MS_ECORRUPT;
		it->bucket = v.mv_data;
		it->bucket_len = v.mv_size;
		it->bucket_off = 0;
	}
	size_t l = ms_get16(it->bucket + it->bucket_off);
	*name_r = (const char *)it->bucket + it->bucket_off + 2;
	*len_r = l;
	it->bucket_off += 2 + l;
	return 1;
}

int ms_idx_segs_iter(struct ms_idx_rd *rd, struct ms_idx_iter **it_r)
{
	return iter_new(rd, IT_SEGS, DB_SEGLIVE, NULL, 0, 0, it_r);
}

int ms_idx_segs_next(struct ms_idx_iter *it, struct ms_idx_seg *s_r)
{
	MDB_val k, v;
	int ret;

	if (it->kind != IT_SEGS)
		return MS_ESTATE;
	if ((ret = iter_step(it, &k, &v)) <= 0)
		return ret;
	if (k.mv_size != 8 || v.mv_size != SEGLIVE_SIZE)
		return MS_ECORRUPT;
	if ((ret = ms_idx_seg_get(it->rd, get_be64(k.mv_data), s_r)) < 0)
		return ret;
	return 1;
}

/* ---- dump ------------------------------------------------------------------
 */

static void put_quoted(FILE *out, const void *p, size_t n)
{
	const uint8_t *b = p;

	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		if (b[i] < 0x20 || b[i] >= 0x7f || b[i] == '"' || b[i] == '\\')
			fprintf(out, "\\x%02x", b[i]);
		else
			fputc(b[i], out);
	}
	fputc('"', out);
}

static void put_hex(FILE *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(out, "%02x", p[i]);
}

static void dump_msg(FILE *out, const struct ms_idx_msg *m, int expunged)
{
	size_t off = 0, len;
	const char *kw;

	fprintf(out, "%s mbox=%llu uid=%u modseq=%llu",
		expunged ? "xmsg" : "msg", (unsigned long long)m->mbox_id,
		m->uid, (unsigned long long)m->modseq);
	if (expunged)
		fprintf(out, " xmodseq=%llu xseq=%llu xtime=%llu",
			(unsigned long long)m->expunge_modseq,
			(unsigned long long)m->expunge_seq,
			(unsigned long long)m->expunge_time);
	fprintf(out, " flags=0x%02x received=%lld saved=%lld guid=", m->flags,
		(long long)m->received_date, (long long)m->save_date);
	put_hex(out, m->guid, 16);
	fputs(" body=", out);
	put_hex(out, m->body_key, 32);
	fprintf(out, " size=%llu vsize=%llu place=%llu@%llu:%llu+%llu kw=[",
		(unsigned long long)m->physical_size,
		(unsigned long long)m->virtual_size,
		(unsigned long long)m->place_seq,
		(unsigned long long)m->place_pos.seg,
		(unsigned long long)m->place_pos.off,
		(unsigned long long)m->place_len);
	for (int first = 1; ms_idx_msg_keyword(m, &off, &kw, &len) > 0;
	     first = 0) {
		if (!first)
			fputc(' ', out);
		put_quoted(out, kw, len);
	}
	fputs("]\n", out);
}

static int dump_entry(FILE *out, int db, const MDB_val *k, const MDB_val *v,
		      const char **err)
{
	const uint8_t *kp = k->mv_data, *vp = v->mv_data;
	int ret = 0;

	switch (db) {
	case DB_USERS: {
		struct ms_idx_user u;
		if ((ret = user_decode(k, v, &u, err)) < 0)
			return ret;
		fprintf(out, "user id=%llu name=", (unsigned long long)u.id);
		put_quoted(out, u.name, u.name_len);
		fprintf(out,
			" max_bytes=%llu max_messages=%llu use_bytes=%llu"
			" use_messages=%llu mailboxes=%llu\n",
			(unsigned long long)u.max_bytes,
			(unsigned long long)u.max_messages,
			(unsigned long long)u.use_bytes,
			(unsigned long long)u.use_messages,
			(unsigned long long)u.mailboxes);
		break;
	}
	case DB_USER_NAMES:
		if (v->mv_size != 8)
			return damaged(db, kp, k->mv_size, "size", err);
		fputs("user_name ", out);
		put_quoted(out, kp, k->mv_size);
		fprintf(out, " id=%llu\n", (unsigned long long)ms_get64(vp));
		break;
	case DB_MBOXES: {
		struct ms_idx_mbox m;
		if ((ret = mbox_decode(k, v, &m, err)) < 0)
			return ret;
		fprintf(out, "mbox id=%llu user=%llu name=",
			(unsigned long long)m.id,
			(unsigned long long)m.user_id);
		put_quoted(out, m.name, m.name_len);
		fprintf(out,
			" uidvalidity=%u special_use=0x%02x uidnext=%llu"
			" highestmodseq=%llu messages=%llu unseen=%llu"
			" bytes=%llu vbytes=%llu expunged=%llu"
			" purged_modseq=%llu guid=",
			m.uidvalidity, m.special_use,
			(unsigned long long)m.uidnext,
			(unsigned long long)m.highestmodseq,
			(unsigned long long)m.messages,
			(unsigned long long)m.unseen,
			(unsigned long long)m.bytes,
			(unsigned long long)m.vbytes,
			(unsigned long long)m.expunged,
			(unsigned long long)m.purged_modseq);
		for (size_t i = 0; i < sizeof(m.guid); i++)
			fprintf(out, "%02x", m.guid[i]);
		fputc('\n', out);
		break;
	}
	case DB_MBOX_NAMES:
		if (k->mv_size != 16 || !bucket_valid(v))
			return damaged(db, kp, k->mv_size, "bucket", err);
		fprintf(out, "mbox_name user=%llu hash=%016llx ids=",
			(unsigned long long)get_be64(kp),
			(unsigned long long)get_be64(kp + 8));
		for (size_t i = 0; i < v->mv_size; i += 8)
			fprintf(out, "%s%llu", i ? "," : "",
				(unsigned long long)ms_get64(vp + i));
		fputc('\n', out);
		break;
	case DB_SUBS:
		if (k->mv_size != 16 || !subs_valid(v))
			return damaged(db, kp, k->mv_size, "bucket", err);
		fprintf(out, "sub user=%llu hash=%016llx names=",
			(unsigned long long)get_be64(kp),
			(unsigned long long)get_be64(kp + 8));
		for (size_t off = 0; off < v->mv_size;) {
			size_t l = ms_get16(vp + off);
			if (off)
				fputc(',', out);
			put_quoted(out, vp + off + 2, l);
			off += 2 + l;
		}
		fputc('\n', out);
		break;
	case DB_MSGS:
	case DB_EXPUNGED: {
		struct ms_idx_msg m;
		if ((ret = msg_decode(db, k, v, &m, err)) < 0)
			return ret;
		dump_msg(out, &m, db == DB_EXPUNGED);
		break;
	}
	case DB_MODSEQ:
		if (k->mv_size != 20 || v->mv_size != 1 || vp[0] > 1)
			return damaged(db, kp, k->mv_size, "size", err);
		fprintf(out, "modseq mbox=%llu modseq=%llu uid=%u %s\n",
			(unsigned long long)get_be64(kp),
			(unsigned long long)get_be64(kp + 8), get_be32(kp + 16),
			vp[0] ? "expunged" : "present");
		break;
	case DB_BODIES: {
		struct body_v b;
		if ((ret = body_decode(k, v, &b, err)) < 0)
			return ret;
		fputs("body key=", out);
		put_hex(out, kp, 32);
		fprintf(out,
			" at=%llu@%llu:%llu+%llu plain=%llu refs=%llu"
			" xrefs=%llu\n",
			(unsigned long long)b.seq, (unsigned long long)b.seg,
			(unsigned long long)b.off,
			(unsigned long long)b.rec_len,
			(unsigned long long)b.plain_len,
			(unsigned long long)b.refs,
			(unsigned long long)b.xrefs);
		break;
	}
	case DB_SEGLIVE:
		if (k->mv_size != 8 || v->mv_size != SEGLIVE_SIZE)
			return damaged(db, kp, k->mv_size, "size", err);
		fprintf(out, "seg %llu live_bytes=%llu live_records=%llu\n",
			(unsigned long long)get_be64(kp),
			(unsigned long long)ms_get64(vp),
			(unsigned long long)ms_get64(vp + 8));
		break;
	case DB_COMPACTED:
		if (k->mv_size != 8 || v->mv_size != COMPACTED_SIZE)
			return damaged(db, kp, k->mv_size, "size", err);
		fprintf(out,
			"compacted seg=%llu seq=%llu sum=%016llx times=%llu\n",
			(unsigned long long)get_be64(kp),
			(unsigned long long)ms_get64(vp),
			(unsigned long long)ms_get64(vp + 8),
			(unsigned long long)ms_get64(vp + 16));
		break;
	default:
		break;
	}
	return ret;
}

int ms_idx_dump(struct ms_idx *idx, FILE *out)
{
	struct ms_idx_rd *rd = NULL;
	struct idx_state st;
	const char *err = NULL;
	int ret;

	if ((ret = ms_idx_read_begin(idx, &rd)) < 0)
		return ret;
	if ((ret = state_load(rd->txn, idx, &st, &err)) < 0)
		goto out;
	fprintf(out, "mstore index v%u\n", MS_IDX_VERSION);
	fprintf(out,
		"applied seq=%llu pos=%llu:%llu records=%llu"
		" anomalies=%llu last_anomaly=%llu\n",
		(unsigned long long)st.seq, (unsigned long long)st.pos.seg,
		(unsigned long long)st.pos.off, (unsigned long long)st.records,
		(unsigned long long)st.anomalies,
		(unsigned long long)st.last_anomaly_seq);
	for (int db = DB_USERS; db < DB_COUNT && ret == 0; db++) {
		struct ms_idx_iter *it = NULL;
		MDB_val k, v;

		if ((ret = iter_new(rd, IT_USERS, db, NULL, 0, 0, &it)) < 0)
			break;
		for (;;) {
			MDB_val key, val;
			int rc = mdb_cursor_get(it->cur, &key, &val,
						it->started ? MDB_NEXT
							    : MDB_FIRST);
			it->started = 1;
			if (rc == MDB_NOTFOUND)
				break;
			if (rc != 0) {
				ret = map_err(rc, db_names[db], &err);
				break;
			}
			if ((ret = val_open(db, &key, &val, &v, &err)) < 0)
				break;
			k = key;
			if ((ret = dump_entry(out, db, &k, &v, &err)) < 0)
				break;
		}
		ms_idx_iter_free(&it);
	}
out:
	if (ret < 0)
		fprintf(out, "error: %s\n", err ? err : ms_strerror(ret));
	ms_idx_read_end(&rd);
	if (ret == 0 && (fflush(out) != 0 || ferror(out)))
		ret = -EIO;
	return ret;
}

/* ---- check -----------------------------------------------------------------
 */

struct chk_ref {
	uint8_t key[32];
};

struct chk_live {
	uint64_t seg, bytes;
};

struct chk {
	struct ms_idx_rd *rd;
	const char *err;
	struct chk_ref *refs, *xrefs;
	size_t nrefs, nxrefs, caprefs, capxrefs;
	struct chk_live *live;
	size_t nlive, caplive;
};

static int chk_fail(struct chk *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int chk_fail(struct chk *c, const char *fmt, ...)
{
	char buf[MS_ERRF_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->err = ms_errf("index check: %s", buf);
	return MS_ECORRUPT;
}

static void chk_add_live(struct chk *c, uint64_t seg, uint64_t bytes)
{
	if (c->nlive == c->caplive) {
		c->caplive = c->caplive ? 2 * c->caplive : 64;
		c->live = ms_realloc(c->live, c->caplive * sizeof(*c->live));
	}
	c->live[c->nlive++] = (struct chk_live){seg, bytes};
}

static void chk_add_ref(struct chk_ref **v, size_t *n, size_t *cap,
			const uint8_t key[32])
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*v = ms_realloc(*v, *cap * sizeof(**v));
	}
	memcpy((*v)[(*n)++].key, key, 32);
}

static int ref_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static int live_cmp(const void *a, const void *b)
{
	const struct chk_live *x = a, *y = b;
	return x->seg < y->seg ? -1 : x->seg > y->seg;
}

/* Walk all of db: fn(c, k, v) for each checked entry. */
static int chk_walk(struct chk *c, int db,
		    int (*fn)(struct chk *c, const MDB_val *k,
			      const MDB_val *v))
{
	struct ms_idx_iter *it = NULL;
	MDB_val k, v;
	int ret;

	if ((ret = iter_new(c->rd, IT_USERS, db, NULL, 0, 0, &it)) < 0)
		return ret;
	while ((ret = iter_step_err(it, &k, &v, &c->err)) > 0) {
		if ((ret = fn(c, &k, &v)) < 0)
			break;
	}
	if (ret == MS_ECORRUPT && c->err == NULL)
		c->err = ms_errf("index check: damaged %s entry", db_names[db]);
	ms_idx_iter_free(&it);
	return ret;
}

static int chk_user(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	struct ms_idx_user u, byname;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_mbox m;
	uint64_t n = 0, bytes = 0, msgs = 0;
	int ret;

	if ((ret = user_decode(k, v, &u, &c->err)) < 0)
		return ret;
	ret = ms_idx_user_by_name(c->rd, u.name, u.name_len, &byname);
	if (ret < 0 || byname.id != u.id)
		return chk_fail(c, "user %llu: name does not map back",
				(unsigned long long)u.id);
	if ((ret = ms_idx_mboxes_iter(c->rd, u.id, &it)) < 0)
		return ret;
	while ((ret = ms_idx_mboxes_next(it, &m)) > 0) {
		n++;
		bytes += m.bytes;
		msgs += m.messages;
	}
	ms_idx_iter_free(&it);
	if (ret < 0)
		return chk_fail(c, "user %llu: mailbox list damaged",
				(unsigned long long)u.id);
	if (n != u.mailboxes || bytes != u.use_bytes || msgs != u.use_messages)
		return chk_fail(c,
				"user %llu: mailboxes %llu/%llu, use %llu/%llu"
				" bytes, %llu/%llu messages (stored/summed)",
				(unsigned long long)u.id,
				(unsigned long long)u.mailboxes,
				(unsigned long long)n,
				(unsigned long long)u.use_bytes,
				(unsigned long long)bytes,
				(unsigned long long)u.use_messages,
				(unsigned long long)msgs);
	return 0;
}

static int chk_user_name(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	struct ms_idx_user u;

	if (v->mv_size != 8 ||
	    ms_idx_user_get(c->rd, ms_get64(v->mv_data), &u) < 0 ||
	    u.name_len != k->mv_size ||
	    memcmp(u.name, k->mv_data, k->mv_size) != 0)
		return chk_fail(c, "user name %s: no such user",
				hex(k->mv_data, k->mv_size));
	return 0;
}

/* Counts of the messages of one mailbox, summed from msgs/expunged. */
struct chk_sums {
	uint64_t messages, unseen, bytes, vbytes, expunged, max_uid, max_modseq;
};

static int chk_msgs_of(struct chk *c, const struct ms_idx_mbox *mb, int db,
		       struct chk_sums *s)
{
	uint8_t pfx[8];
	struct ms_idx_iter *it = NULL;
	MDB_val k, v;
	int ret;

	be64(pfx, mb->id);
	if ((ret = iter_new(c->rd, IT_MSGS, db, pfx, 8, 8, &it)) < 0)
		return ret;
	while ((ret = iter_step_err(it, &k, &v, &c->err)) > 0) {
		struct ms_idx_msg m;
		uint8_t mk[20];
		MDB_val mv;
		uint64_t modseq;

		if ((ret = msg_decode(db, &k, &v, &m, &c->err)) < 0)
			break;
		modseq = db == DB_EXPUNGED ? m.expunge_modseq : m.modseq;
		if (db == DB_MSGS) {
			s->messages++;
			s->unseen += !(m.flags & MS_EVENT_FLAG_SEEN);
			s->bytes += m.physical_size;
			s->vbytes += m.virtual_size;
			chk_add_ref(&c->refs, &c->nrefs, &c->caprefs,
				    m.body_key);
		} else {
			s->expunged++;
			chk_add_ref(&c->xrefs, &c->nxrefs, &c->capxrefs,
				    m.body_key);
		}
		chk_add_live(c, m.place_pos.seg, m.place_len);
		if (m.uid > s->max_uid)
			s->max_uid = m.uid;
		if (modseq > s->max_modseq)
			s->max_modseq = modseq;
		modseq_key(mk, mb->id, modseq, m.uid);
		ret = db_get(c->rd->txn, c->rd->idx, DB_MODSEQ, mk, 20, &mv,
			     &c->err);
		if (ret < 0 || mv.mv_size != 1 ||
		    *(const uint8_t *)mv.mv_data != (db == DB_EXPUNGED)) {
			ret = chk_fail(c,
				       "mailbox %llu uid %u: no modseq entry",
				       (unsigned long long)mb->id, m.uid);
			break;
		}
	}
	ms_idx_iter_free(&it);
	return ret;
}

static int chk_mbox(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	struct ms_idx_mbox m, byname;
	struct ms_idx_user u;
	struct chk_sums s;
	int ret;

	if ((ret = mbox_decode(k, v, &m, &c->err)) < 0)
		return ret;
	if (ms_idx_user_get(c->rd, m.user_id, &u) < 0)
		return chk_fail(c, "mailbox %llu: no user %llu",
				(unsigned long long)m.id,
				(unsigned long long)m.user_id);
	ret = mbox_find(c->rd->txn, c->rd->idx, m.user_id, m.name, m.name_len,
			&byname, &c->err);
	if (ret < 0 || byname.id != m.id)
		return chk_fail(c, "mailbox %llu: name does not map back",
				(unsigned long long)m.id);
	memset(&s, 0, sizeof(s));
	if ((ret = chk_msgs_of(c, &m, DB_MSGS, &s)) < 0 ||
	    (ret = chk_msgs_of(c, &m, DB_EXPUNGED, &s)) < 0)
		return ret;
	if (s.messages != m.messages || s.unseen != m.unseen ||
	    s.bytes != m.bytes || s.vbytes != m.vbytes ||
	    s.expunged != m.expunged)
		return chk_fail(c,
				"mailbox %llu: counters differ from its "
				"messages",
				(unsigned long long)m.id);
	if (m.uidnext == 0 || s.max_uid >= m.uidnext ||
	    s.max_modseq > m.highestmodseq)
		return chk_fail(c,
				"mailbox %llu: uidnext/highestmodseq below "
				"its messages'",
				(unsigned long long)m.id);
	return 0;
}

static int chk_mbox_name(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	if (k->mv_size != 16 || !bucket_valid(v))
		return chk_fail(c, "mbox_names: bad bucket");
	for (size_t i = 0; i < v->mv_size; i += 8) {
		struct ms_idx_mbox m;
		uint8_t nk[16];
		uint64_t id = ms_get64((const uint8_t *)v->mv_data + i);

		if (ms_idx_mbox_get(c->rd, id, &m) < 0)
			return chk_fail(c, "mbox_names: no mailbox %llu",
					(unsigned long long)id);
		name_key(nk, m.user_id, m.name, m.name_len);
		if (memcmp(nk, k->mv_data, 16) != 0)
			return chk_fail(c,
					"mbox_names: mailbox %llu under the "
					"wrong name",
					(unsigned long long)id);
	}
	return 0;
}

static int chk_sub(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	struct ms_idx_user u;

	if (k->mv_size != 16 || !subs_valid(v))
		return chk_fail(c, "subs: bad bucket");
	if (ms_idx_user_get(c->rd, get_be64(k->mv_data), &u) < 0)
		return chk_fail(c, "subs: no user");
	for (size_t off = 0; off < v->mv_size;) {
		const uint8_t *p = (const uint8_t *)v->mv_data + off;
		size_t l = ms_get16(p);
		uint8_t nk[16];
		name_key(nk, u.id, p + 2, l);
		if (memcmp(nk, k->mv_data, 16) != 0)
			return chk_fail(c, "subs: name under the wrong hash");
		off += 2 + l;
	}
	return 0;
}

static int chk_modseq(struct chk *c, const MDB_val *k, const MDB_val *v)
{
	const uint8_t *kp = k->mv_data;
	struct ms_idx_msg m;
	int ret;

	if (k->mv_size != 20 || v->mv_size != 1)
		return chk_fail(c, "modseq: bad entry");
	ret = msg_get(c->rd,
		      *(const uint8_t *)v->mv_data ? DB_EXPUNGED : DB_MSGS,
		      get_be64(kp), get_be32(kp + 16), &m);
	if (ret < 0 ||
	    (*(const uint8_t *)v->mv_data ? m.expunge_modseq : m.modseq) !=
		    get_be64(kp + 8))
		return chk_fail(c, "modseq: entry %s without its message",
				hex(kp, 20));
	return 0;
}

static uint64_t chk_count_refs(const struct chk_ref *v, size_t n, size_t *i,
			       const uint8_t key[32])
{
	uint64_t count = 0;

	while (*i < n && memcmp(v[*i].key, key, 32) < 0)
		(*i)++; /* refs to a missing body: caught below */
	while (*i < n && memcmp(v[*i].key, key, 32) == 0) {
		(*i)++;
		count++;
	}
	return count;
}

int ms_idx_check(struct ms_idx *idx, const char **error_r)
{
	struct chk c;
	struct ms_idx_iter *it = NULL;
	MDB_stat st;
	MDB_val k, v;
	size_t ri = 0, xi = 0, li;
	uint64_t nrefs_seen = 0, nx_seen = 0;
	int ret;

	memset(&c, 0, sizeof(c));
	if ((ret = ms_idx_read_begin(idx, &c.rd)) < 0) {
		*error_r = "index check: cannot read";
		return ret;
	}
	struct idx_state state;
	if ((ret = state_load(c.rd->txn, idx, &state, &c.err)) < 0 ||
	    (ret = chk_walk(&c, DB_USERS, chk_user)) < 0 ||
	    (ret = chk_walk(&c, DB_USER_NAMES, chk_user_name)) < 0 ||
	    (ret = chk_walk(&c, DB_MBOXES, chk_mbox)) < 0 ||
	    (ret = chk_walk(&c, DB_MBOX_NAMES, chk_mbox_name)) < 0 ||
	    (ret = chk_walk(&c, DB_SUBS, chk_sub)) < 0 ||
	    (ret = chk_walk(&c, DB_MODSEQ, chk_modseq)) < 0)
		goto out;
	/* every message was seen through a mailbox, once */
	uint64_t n_msgs = 0, n_x = 0, n_modseq = 0;
	if (mdb_stat(c.rd->txn, idx->db[DB_MSGS], &st) == 0)
		n_msgs = st.ms_entries;
	if (mdb_stat(c.rd->txn, idx->db[DB_EXPUNGED], &st) == 0)
		n_x = st.ms_entries;
	if (mdb_stat(c.rd->txn, idx->db[DB_MODSEQ], &st) == 0)
		n_modseq = st.ms_entries;
	if (n_msgs != c.nrefs || n_x != c.nxrefs || n_modseq != n_msgs + n_x) {
		ret = chk_fail(&c, "messages outside any mailbox, or modseq "
				   "entries without messages");
		goto out;
	}
	/* refcounts, and the bodies' share of live bytes */
	if (c.nrefs > 1)
		qsort(c.refs, c.nrefs, sizeof(*c.refs), ref_cmp);
	if (c.nxrefs > 1)
		qsort(c.xrefs, c.nxrefs, sizeof(*c.xrefs), ref_cmp);
	if ((ret = iter_new(c.rd, IT_USERS, DB_BODIES, NULL, 0, 0, &it)) < 0)
		goto out;
	while ((ret = iter_step_err(it, &k, &v, &c.err)) > 0) {
		struct body_v b;
		if ((ret = body_decode(&k, &v, &b, &c.err)) < 0)
			break;
		uint64_t r = chk_count_refs(c.refs, c.nrefs, &ri, k.mv_data);
		uint64_t x = chk_count_refs(c.xrefs, c.nxrefs, &xi, k.mv_data);
		nrefs_seen += r;
		nx_seen += x;
		if (!body_has_loc(&b)) {
			/* only between a HOLE and its RETIRE (idx.h) */
			ret = chk_fail(&c,
				       "body %s: no location (refcount "
				       "%llu/%llu)",
				       hex(k.mv_data, 32),
				       (unsigned long long)b.refs,
				       (unsigned long long)b.xrefs);
			break;
		}
		if (r != b.refs || x != b.xrefs) {
			ret = chk_fail(
				&c,
				"body %s: refcount %llu/%llu, "
				"placements %llu/%llu",
				hex(k.mv_data, 32), (unsigned long long)b.refs,
				(unsigned long long)b.xrefs,
				(unsigned long long)r, (unsigned long long)x);
			break;
		}
		if (b.refs + b.xrefs > 0)
			chk_add_live(&c, b.seg, b.rec_len);
	}
	ms_idx_iter_free(&it);
	if (ret < 0)
		goto out;
	if (nrefs_seen != c.nrefs || nx_seen != c.nxrefs) {
		ret = chk_fail(&c, "messages placed on a missing body");
		goto out;
	}
	/* live bytes per segment */
	if (c.nlive > 1)
		qsort(c.live, c.nlive, sizeof(*c.live), live_cmp);
	li = 0;
	if ((ret = iter_new(c.rd, IT_SEGS, DB_SEGLIVE, NULL, 0, 0, &it)) < 0)
		goto out;
	while ((ret = iter_step_err(it, &k, &v, &c.err)) > 0) {
		uint64_t seg, bytes = 0, records = 0;
		if (k.mv_size != 8 || v.mv_size != SEGLIVE_SIZE) {
			ret = chk_fail(&c, "seglive: bad entry");
			break;
		}
		seg = get_be64(k.mv_data);
		if (li < c.nlive && c.live[li].seg < seg) {
			ret = chk_fail(&c,
				       "segment %llu: live records but no "
				       "live bytes entry",
				       (unsigned long long)c.live[li].seg);
			break;
		}
		for (; li < c.nlive && c.live[li].seg == seg; li++) {
			bytes += c.live[li].bytes;
			records++;
		}
		if (bytes != ms_get64(v.mv_data) ||
		    records != ms_get64((const uint8_t *)v.mv_data + 8)) {
			ret = chk_fail(&c,
				       "segment %llu: live %llu bytes in "
				       "%llu records, summed %llu in %llu",
				       (unsigned long long)seg,
				       (unsigned long long)ms_get64(v.mv_data),
				       (unsigned long long)ms_get64(
					       (const uint8_t *)v.mv_data + 8),
				       (unsigned long long)bytes,
				       (unsigned long long)records);
			break;
		}
	}
	ms_idx_iter_free(&it);
	if (ret == 0 && li < c.nlive)
		ret = chk_fail(&c,
			       "segment %llu: live records but no live "
			       "bytes entry",
			       (unsigned long long)c.live[li].seg);
out:
	if (ret < 0)
		*error_r = c.err ? c.err : ms_strerror(ret);
	free(c.refs);
	free(c.xrefs);
	free(c.live);
	ms_idx_read_end(&c.rd);
	return ret < 0 ? ret : 0;
}
