/*
 * idx.h - the index: everything a reader asks, derived from the log and
 * kept in LMDB (DESIGN.md section 4).  It can be thrown away and rebuilt
 * from the log alone at any time (ms_idx_rebuild); nothing lives only here.
 *
 * Applying.  The daemon appends records; once a batch is durable it opens
 * one write transaction (ms_idx_begin), applies every record of the batch
 * in log order (ms_idx_apply) and commits (ms_idx_commit).  Apply is
 * deterministic and idempotent by seq: a record whose seq is <= the
 * applied seq is skipped, so replaying from any earlier position yields
 * the same index.  The index records the seq and position of the last
 * record it applied; a restart replays the tail (ms_idx_catch_up).
 *
 * Durability.  The environment runs with MDB_NOSYNC: the log is the
 * durable truth and ms_idx_sync() flushes when the caller wants.  A
 * process crash loses nothing (the OS has the pages).  Power loss with
 * unsynced commits can leave an LMDB file that is inconsistent, so the
 * index marks itself "open" (synced) at open and "closed" (synced) at
 * close, with the kernel's boot id: an index found open under another
 * boot id was cut by a reboot and is refused with MS_ECORRUPT (rebuild).
 * An unreadable boot id counts as the same boot.
 *
 * Trust.  Every value carries a checksum over its key and bytes (below)
 * and is checked for its size and layout before use; damage reads as
 * MS_ECORRUPT, never as data.  LMDB's own page structure has no checksums
 * and is trusted, as LMDB trusts it; its meta pages are checked by LMDB at
 * open.  ms_idx_open() returns MS_EVERSION for an index of another format
 * version and MS_ECORRUPT for one it cannot read: the caller rebuilds.
 *
 * Anomalies.  The writer validates every record before it logs it, so a
 * record naming an unknown user or mailbox, or a duplicate id, name or
 * uid, is a writer bug, not a reason to stop: it is still "applied" (its
 * seq is recorded) with no effect, counted in a persistent anomaly counter
 * and reported with MS_IDX_ANOMALY.  A payload that does not decode is
 * handled the same way.  Uids in FLAGS and EXPUNGE ranges that name no
 * message are normal (gaps) and not anomalies, and so are a PLACE's body
 * key no BODY record gave and a restore_uid that is not expunged: after
 * compaction a rebuild meets all of them (see Meaning).
 *
 * Threads: an index belongs to one thread, like the log.  One write
 * transaction at a time; read handles (ms_idx_read_begin) may be open at
 * the same time as it and see the last committed state.
 *
 * Errors: 0 or a negative MS_E* / -errno.  MS_ENOTFOUND: no such item.
 * MS_ECORRUPT: a damaged value (*error_r names the table and key when the
 * call has error_r).  MS_ETOOBIG: the map is full (ms_idx_grow).  -EFBIG:
 * the transaction changed more pages than LMDB allows in one (about 512
 * MiB; a batch deleting a mailbox of millions of messages): use smaller
 * batches.  A write transaction that failed can only be aborted.
 *
 * ---- Meaning ----------------------------------------------------------
 *
 * Per mailbox: messages, unseen (no \Seen), bytes (physical sizes) and
 * vbytes (virtual sizes) count present messages; expunged counts expunged
 * but restorable ones.  uidnext = max(1, max uid placed + 1, max hi of the
 * uid ranges of every EXPUNGE + 1) and highestmodseq = max modseq of every
 * PLACE, FLAGS and EXPUNGE applied to the mailbox (0 for a new one): both
 * only grow, whatever order records come in.  (The EXPUNGE term changes
 * nothing for a log as the writer makes it, whose expunge ranges name only
 * placed uids; it keeps uidnext right when compaction dropped the PLACE of
 * the highest uid, below.)  uidnext is 64 bits: placing uid 4294967295
 * makes it 2^32.
 *
 * Per message: flags and keywords as the last change left them; keywords
 * are kept sorted bytewise without duplicates.  FLAGS changes only the
 * messages whose flags or keywords actually change; each gets modseq
 * max(its modseq, the record's).  EXPUNGE moves a message to the expunged
 * table with expunge modseq max(its modseq, the record's), the record's
 * seq as expunge seq and the record's time (unix seconds) as expunge
 * time.  Quota use of a user counts present messages only: bytes = sum of
 * physical sizes, messages = count.
 *
 * Undelete: a PLACE with restore_uid != 0 first takes the expunged
 * message (mailbox, restore_uid) out of the expunged set (its modseq
 * entry, the mailbox's expunged count, its body's expunged_refs, its
 * PLACE record's live bytes), then places the new message as any PLACE
 * does.  If there is no such expunged message, the placement still
 * happens and it is not an anomaly: a rebuild from a compacted log meets
 * that case normally (the PLACE of the expunged message was dropped).
 *
 * PURGE: every expunged message (all mailboxes) whose expunge time is
 * < before leaves the expunged set for good, the same way (modseq entry,
 * expunged count, expunged_refs, live bytes of its PLACE record).
 *
 * Bodies: refcount = present placements of the body, expunged_refs =
 * expunged (restorable) placements of it.  A body entry has a location
 * (seq, seg:off, record bytes) = the last BODY record of its key applied,
 * or none (all 0) when a PLACE names a key no applied BODY record has: a
 * rebuild from a compacted log meets that when the PLACE was kept and the
 * BODY dropped; it is not an anomaly and the message is placed as usual.
 * A BODY record for a known key moves the entry to the newer record (and
 * gives a location to one that had none).  When refcount + expunged_refs
 * drops to 0 an entry without location is deleted; one with a location
 * stays (dedup may use it again) until a RETIRE drops its record.  At a
 * consistent point (after the last RETIRE whose compaction made the
 * holes, which is any point of a log as the writer makes it) no entry is
 * without location.  ms_idx_body_get() does not return an entry without
 * location (MS_ENOTFOUND): there is no record to read or share.
 *
 * Live bytes per segment: the bytes (header + payload) of the records a
 * compaction must keep: a BODY record while its body is at that record
 * and refcount + expunged_refs > 0, and a PLACE record while its message
 * is present or expunged-restorable.  Other records (mailbox, user, flag
 * records ...) are small and not counted: compaction must carry the state
 * they made forward in any case.
 *
 * Mailbox delete drops the mailbox with its present and expunged
 * messages; user delete drops the user, its mailboxes and subscriptions.
 * MBOX_UPDATE (a migration keeping UIDs): a UIDVALIDITY or GUID given
 * replaces the mailbox's; uidnext and highestmodseq become the max of
 * theirs and the record's (0 changes nothing).  The writer allows a new
 * UIDVALIDITY only while the mailbox has no present message; the index
 * applies it as it comes.
 *
 * Rename changes the name only: id, UIDVALIDITY and messages stay (one
 * record renames one mailbox; the writer renames children one by one).
 *
 * Compaction.  RETIRE says that sealed segment seg was rewritten in place
 * with the listed records replaced by HOLE records (same offset, seq and
 * length); every other record kept its offset, so no position the index
 * holds changes.  The writer drops only dead records: a BODY whose entry
 * is at that record with refcount + expunged_refs = 0, a PLACE no present
 * or expunged message has as its place position, a NOOP.  RETIRE applies
 * so that an index that applied the original records and one rebuilt from
 * the compacted log (HOLEs) are equal after it:
 *   - a BODY drop with key k: if the entry of k is at the dropped record,
 *     or (no refs) at an earlier position (a rebuild, which did not see
 *     the dropped record that had moved the entry there), and has
 *     refcount + expunged_refs = 0, it is deleted.  At the dropped record
 *     with refs > 0 is a writer bug: an anomaly, the entry stays (the
 *     other drops of the record still apply: the segment is compacted on
 *     disk whatever the index says).  Absent, or at a later position:
 *     nothing;
 *   - PLACE and NOOP drops: nothing;
 *   - the compacted table records seg with the seq of this RETIRE, its
 *     seal checksum sum, and how many times the segment was compacted.
 * A body in a compacted segment is found as any other: its entry is gone
 * only if its record was dropped.
 * A HOLE record changes nothing but the applied position and the record
 * count (it counts as the record it replaced did); its payload is not
 * read (may be NULL).
 * TIMELINE, CHECKPOINT, NOOP and HOLE change nothing but the applied
 * position.  SEAL records change nothing at all, not even the applied
 * position or the record count: the log writes them itself and the daemon
 * never sees them, and a feed with or without them must build the same
 * index.
 *
 * What a rebuild from a compacted log cannot give back: the anomaly
 * counters when a dropped record was an anomaly (a PLACE naming an unknown
 * mailbox is dead by the rule above).  Everything else dumps the same.
 *
 * ---- Tables (LMDB named databases) -----------------------------------
 *
 * Keys: big-endian integers (so LMDB's byte order is numeric order) and
 * raw bytes.  Values: little-endian (ms_put*), each followed by a u32
 * checksum: the low 32 bits of XXH3_64bits_withSeed(value, len,
 * XXH3_64bits(key, keylen)).  The value layouts below leave the checksum
 * out.  A str is u16 length + bytes.  hash(name) is XXH3_64bits(name).
 *
 * meta      "format" -> "MSTOIDX\0" u32 version u32 0 (16 bytes, no
 *                       checksum; wrong magic MS_ECORRUPT, version
 *                       MS_EVERSION)
 *           "state"  -> u64 applied seq, u64 applied seg, u64 applied off,
 *                       u64 records applied (no seals; HOLEs count),
 *                       u64 anomalies, u64 seq of the last anomaly     (48)
 *           "store"  -> u8[16] store id of the log it follows; set by the
 *                       first ms_idx_catch_up()                        (16)
 *           "open"   -> u64 open (1) / closed (0), u8[40] boot id, NUL
 *                       padded                                         (48)
 * users     u64 user_id -> u64 max_bytes, u64 max_messages, u64 use_bytes,
 *                       u64 use_messages, u64 mailboxes, str name    (42+n)
 * user_names  name bytes (1..255) -> u64 user_id                        (8)
 * mboxes    u64 mbox_id -> u64 user_id, u32 uidvalidity, u32 special_use,
 *                       u64 uidnext, u64 highestmodseq, u64 messages,
 *                       u64 unseen, u64 bytes, u64 vbytes, u64 expunged,
 *                       u8[16] guid (all zero: none set),
 *                       u64 purged_modseq, str name                  (98+n)
 * mbox_names  u64 user_id, u64 hash(name) -> k x u64 mbox_id, ascending,
 *                       k >= 1 (the mailboxes of the user whose names
 *                       share that hash; names up to 1024 bytes do not
 *                       fit an LMDB key)                              (8k)
 * subs      u64 user_id, u64 hash(name) -> k x str name, ascending
 *                       bytewise, k >= 1 (subscribed names)
 * msgs      u64 mbox_id, u32 uid -> MSG:
 *               0 u64 modseq        8 u32 flags      12 u32 nkeywords
 *              16 i64 received     24 i64 saved      32 u8[16] guid
 *              48 u8[32] body key  80 u64 physical   88 u64 virtual
 *              96 u64 place seq   104 u64 place seg 112 u64 place off
 *             120 u64 place record bytes (header + payload)
 *             128 nkeywords x str, ascending bytewise, unique, 1..255 bytes
 * expunged  u64 mbox_id, u32 uid -> u64 expunge modseq, u64 expunge seq,
 *                       u64 expunge time (unix seconds), MSG   (24+MSG)
 * modseq    u64 mbox_id, u64 modseq, u32 uid -> u8 kind (0 the message is
 *                       present with this modseq, 1 expunged with this
 *                       expunge modseq): one entry per message of msgs and
 *                       expunged; the change feed walks it            (1)
 * bodies    u8[32] dedup key -> u64 seq, u64 seg, u64 off, u64 record
 *                       bytes, u64 plain length, u64 refcount,
 *                       u64 expunged_refs; seq, seg, off, record bytes
 *                       and plain length all 0: no location          (56)
 * seglive   u64 seg -> u64 live bytes, u64 live records; no entry when 0
 *                                                                      (16)
 * compacted u64 seg -> u64 seq of the last RETIRE of seg, u64 its seal
 *                       checksum, u64 times compacted                  (24)
 */
#ifndef MS_IDX_H
#define MS_IDX_H

#include <stdio.h>

#include "ms.h"
#include "rec.h"

#define MS_IDX_VERSION 3u
/* 0 as map_size: this.  Sparse on disk; only the address space is used. */
#define MS_IDX_MAP_SIZE_DEFAULT ((uint64_t)16 << 30)
/* Records per write transaction in ms_idx_catch_up / ms_idx_rebuild. */
#define MS_IDX_BATCH 1000

/* Positive results of ms_idx_apply(). */
enum {
	MS_IDX_SKIPPED = 1, /* seq <= applied seq: already in the index */
	MS_IDX_ANOMALY = 2, /* applied with no effect; *error_r says why */
};

struct ms_log;
struct ms_idx;
struct ms_idx_txn;
struct ms_idx_rd;
struct ms_idx_iter;

/*
 * Open (creating dir and a new index if there is none) with a map of at
 * least map_size bytes (0: MS_IDX_MAP_SIZE_DEFAULT; a larger map the index
 * already has is kept).
 * MS_EVERSION: other format version; MS_ECORRUPT: not an index we can
 * read, or cut by a reboot (see Durability); -errno.  *error_r says
 * which.
 */
int ms_idx_open(const char *dir, uint64_t map_size, struct ms_idx **idx_r,
		const char **error_r);
/*
 * Mark the index closed and sync.  No write transaction or read handle may
 * be open (a bug: asserted).
 */
void ms_idx_close(struct ms_idx **idx);
/* Flush committed transactions to disk (mdb_env_sync).  0 or -errno. */
int ms_idx_sync(struct ms_idx *idx);
/*
 * Grow the map to map_size (0: double it).  No transaction or read
 * handle may be open (MS_ESTATE).  After MS_ETOOBIG from apply or
 * commit: abort, grow, apply the batch again.
 */
int ms_idx_grow(struct ms_idx *idx, uint64_t map_size);
/* Seq and position of the last applied record; 0 and 0:0 when empty. */
int ms_idx_applied(struct ms_idx *idx, uint64_t *seq_r, struct ms_pos *pos_r);

/* ---- applying ---------------------------------------------------------- */

/* Open the write transaction.  MS_ESTATE if one is open. */
int ms_idx_begin(struct ms_idx *idx, struct ms_idx_txn **txn_r);
/*
 * Apply one record at pos (the position of its header) with its payload
 * (hdr->len bytes).  0 applied (a SEAL: nothing to do); MS_IDX_SKIPPED;
 * MS_IDX_ANOMALY (counted, *error_r says what); <0 an error: the
 * transaction is failed and can only be aborted (commit refuses it with
 * MS_ESTATE).
 */
int ms_idx_apply(struct ms_idx_txn *txn, uint64_t seq, struct ms_pos pos,
		 const struct ms_rec_hdr *hdr, const uint8_t *payload,
		 const char **error_r);
/* Commit and free.  On failure nothing of the transaction is kept. */
int ms_idx_commit(struct ms_idx_txn **txn);
void ms_idx_abort(struct ms_idx_txn **txn);
/*
 * The write transaction as a reader (uncommitted state included), for
 * the query functions below.  Borrowed: valid until the transaction
 * ends; what it returns is valid until the next apply.  Not for
 * ms_idx_read_end().
 */
struct ms_idx_rd *ms_idx_txn_rd(struct ms_idx_txn *txn);

/* ---- log replay ---------------------------------------------------------- */

/*
 * Apply the log from the applied position to its durable end in
 * transactions of MS_IDX_BATCH records, growing the map when it fills.
 * Checks that the index follows this log's store (MS_EMISMATCH if not;
 * the first call records the store id).  Anomalies are logged (msg_warn)
 * and counted.  A record bad on every copy stops it: what came before is
 * committed and the error is returned.
 */
int ms_idx_catch_up(struct ms_idx *idx, struct ms_log *log,
		    const char **error_r);
/*
 * Delete the index in dir (data.mdb, lock.mdb; it must not be open),
 * create a new one and apply the whole log.  An interrupted rebuild
 * leaves a valid index that ms_idx_catch_up() completes.
 */
int ms_idx_rebuild(const char *dir, uint64_t map_size, struct ms_log *log,
		   const char **error_r);

/* ---- reading ------------------------------------------------------------- */

/*
 * A read handle: one LMDB read transaction, a consistent snapshot of the
 * last commit.  While a write transaction is open (ms_idx_begin), the
 * handle is that transaction instead: it sees what was applied and not
 * yet committed, so a writer that commits only now and then still reads
 * what it answered; MS_ESTATE when that transaction failed.  Such a
 * handle must end before the transaction does (asserted), and what it
 * returned is valid until the next apply.  Everything the queries return
 * that points into the index (names, keywords) is borrowed and stays
 * valid until ms_idx_read_end().  Keep handles short: a long reader
 * holds old pages and grows the file.
 */
int ms_idx_read_begin(struct ms_idx *idx, struct ms_idx_rd **rd_r);
void ms_idx_read_end(struct ms_idx_rd **rd);

struct ms_idx_user {
	uint64_t id;
	const char *name; /* borrowed, name_len bytes, no NUL */
	size_t name_len;
	uint64_t max_bytes, max_messages; /* quota limits, 0 = unlimited */
	uint64_t use_bytes, use_messages; /* quota use */
	uint64_t mailboxes;
};

struct ms_idx_mbox {
	uint64_t id, user_id;
	const char *name; /* borrowed, name_len bytes, no NUL */
	size_t name_len;
	uint32_t uidvalidity;
	uint32_t special_use; /* MS_EVENT_SU_* */
	uint64_t uidnext, highestmodseq;
	uint64_t messages, unseen, bytes, vbytes, expunged;
	uint8_t guid[16]; /* MBOX_UPDATE's; all zero: none was set */
	/*
	 * The highest expunge modseq the change feed no longer carries:
	 * raised by a PURGE for each expunge it drops, by an undelete for
	 * the expunge of the uid it restores (under a new uid), and by an
	 * EXPUNGE whose messages are already gone (their PLACE records
	 * compacted away after a PURGE or an undelete: what a rebuild from
	 * a compacted log sees), so a rebuilt index has the same value.  A CHANGES since a modseq
	 * below it cannot list every expunge: MS_ESTATE.
	 */
	uint64_t purged_modseq;
	int subscribed; /* the user subscribes the name */
};

struct ms_idx_msg {
	uint64_t mbox_id;
	uint32_t uid;
	uint32_t flags; /* MS_EVENT_FLAG_* */
	uint64_t modseq;
	int64_t received_date, save_date;
	uint8_t guid[16];
	uint8_t body_key[32];
	uint64_t physical_size, virtual_size;
	uint64_t place_seq; /* the PLACE record */
	struct ms_pos place_pos;
	uint64_t place_len; /* its bytes, header + payload */
	uint32_t nkeywords;
	const uint8_t *keywords; /* borrowed: nkeywords x str */
	size_t keywords_len;
	/* 0 unless expunged: the EXPUNGE's modseq (or the message's, if
	   higher), seq and time (unix seconds) */
	uint64_t expunge_modseq, expunge_seq, expunge_time;
};

/*
 * Walk the keywords of m: *off starts at 0.  1 with the next keyword
 * (borrowed, no NUL), 0 at the end.
 */
int ms_idx_msg_keyword(const struct ms_idx_msg *m, size_t *off,
		       const char **kw_r, size_t *len_r);

struct ms_idx_body {
	uint8_t key[32];
	uint64_t seq; /* the BODY record */
	struct ms_pos pos;
	uint64_t rec_len; /* its bytes, header + payload */
	uint64_t plain_len;
	uint64_t refcount;      /* present placements */
	uint64_t expunged_refs; /* expunged, restorable placements */
};

struct ms_idx_seg {
	uint64_t seg, live_bytes, live_records;
	int compacted;        /* a RETIRE compacted it */
	uint64_t compact_seq; /* 0 unless compacted: the last RETIRE's seq, */
	uint64_t sum;         /* its seal checksum, */
	uint64_t compactions; /* how many RETIREs compacted it */
};

struct ms_idx_stats {
	uint64_t applied_seq;	/* applied, in the handle's transaction */
	struct ms_pos applied_pos;
	uint64_t committed_seq;	/* applied and committed */
	uint64_t records; /* records applied (no skips, no seals) */
	uint64_t anomalies, last_anomaly_seq;
	uint64_t users, mailboxes, messages, expunged, bodies;
	uint64_t live_segments, compacted_segments;
	uint64_t map_size, map_used; /* bytes */
	uint64_t skipped; /* MS_IDX_SKIPPED since open (not persistent) */
};

/* Single lookups: 0, MS_ENOTFOUND, MS_ECORRUPT. */
int ms_idx_user_get(struct ms_idx_rd *rd, uint64_t user_id,
		    struct ms_idx_user *u_r);
int ms_idx_user_by_name(struct ms_idx_rd *rd, const char *name, size_t len,
			struct ms_idx_user *u_r);
int ms_idx_mbox_get(struct ms_idx_rd *rd, uint64_t mbox_id,
		    struct ms_idx_mbox *m_r);
int ms_idx_mbox_by_name(struct ms_idx_rd *rd, uint64_t user_id,
			const char *name, size_t len, struct ms_idx_mbox *m_r);
/* A present message. */
int ms_idx_msg_get(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t uid,
		   struct ms_idx_msg *m_r);
/* An expunged (restorable) message. */
int ms_idx_expunged_get(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t uid,
			struct ms_idx_msg *m_r);
/*
 * A body: where its BODY record is and its refcounts.  MS_ENOTFOUND also
 * for an entry without location (see Bodies above).
 */
int ms_idx_body_get(struct ms_idx_rd *rd, const uint8_t key[32],
		    struct ms_idx_body *b_r);
/* 1 if the user subscribes name, 0 if not. */
int ms_idx_subscribed(struct ms_idx_rd *rd, uint64_t user_id, const char *name,
		      size_t len);
/* Live bytes of a segment (0 if none) and whether it was compacted. */
int ms_idx_seg_get(struct ms_idx_rd *rd, uint64_t seg, struct ms_idx_seg *s_r);
int ms_idx_stats(struct ms_idx_rd *rd, struct ms_idx_stats *st_r);

/*
 * Iterators over one read handle (free them before it ends).  Each
 * *_iter() opens one; its *_next() returns 1 with the next item, 0 at the
 * end, <0 on error (MS_ECORRUPT; MS_ESTATE if the iterator is of another
 * kind).  Items borrow like single lookups.
 *
 * users:    all users, by id.
 * mboxes:   the mailboxes of a user, in hash-of-name order.
 * msgs:     present messages of a mailbox with lo <= uid <= hi, by uid.
 * changes:  what changed in a mailbox after since_modseq, by modseq:
 *           present messages whose modseq > since (is_expunge 0, msg set)
 *           and expunged uid ranges whose expunge modseq > since
 *           (is_expunge 1, uid_lo..uid_hi share that modseq).
 * expunged: expunged (restorable) messages of a mailbox whose expunge
 *           time >= since (unix seconds, the EXPUNGE record's time; 0:
 *           all), by uid.
 * subs:     subscribed names of a user, in hash order.
 * segs:     segments with live bytes, by number.
 */
struct ms_idx_change {
	int is_expunge;
	uint64_t modseq;
	uint32_t uid_lo, uid_hi;
	struct ms_idx_msg msg; /* !is_expunge */
};

int ms_idx_users_iter(struct ms_idx_rd *rd, struct ms_idx_iter **it_r);
/* The same, from the first user whose id is from_id or above. */
int ms_idx_users_iter_from(struct ms_idx_rd *rd, uint64_t from_id,
			   struct ms_idx_iter **it_r);
int ms_idx_users_next(struct ms_idx_iter *it, struct ms_idx_user *u_r);
int ms_idx_mboxes_iter(struct ms_idx_rd *rd, uint64_t user_id,
		       struct ms_idx_iter **it_r);
/* The same, from the bucket after the one where name would be (the
   mailboxes are walked in the order of their names' hash; name need not
   exist): a page of MBOX_LIST after the last name of the one before. */
int ms_idx_mboxes_iter_after(struct ms_idx_rd *rd, uint64_t user_id,
			     const char *name, size_t len,
			     struct ms_idx_iter **it_r);
int ms_idx_mboxes_next(struct ms_idx_iter *it, struct ms_idx_mbox *m_r);
/* The name hash of the bucket the last mailbox came from: names of one
   hash (a bucket) go in one page. */
uint64_t ms_idx_mboxes_bucket(const struct ms_idx_iter *it);
int ms_idx_msgs_iter(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t lo,
		     uint32_t hi, struct ms_idx_iter **it_r);
/* ms_idx_msgs_iter when *itp is NULL; else the same iterator, moved to
   [lo, hi] of mbox_id: one cursor for the ranges of a uid set (ascending
   ranges keep it on the same pages).  The caller frees *itp once. */
int ms_idx_msgs_range(struct ms_idx_rd *rd, uint64_t mbox_id, uint32_t lo,
		      uint32_t hi, struct ms_idx_iter **itp);
int ms_idx_msgs_next(struct ms_idx_iter *it, struct ms_idx_msg *m_r);
/* Only the next message's uid, from its key: the value is not read (nor
   checked; who changes the message reads it). */
int ms_idx_msgs_next_uid(struct ms_idx_iter *it, uint32_t *uid_r);
int ms_idx_changes_iter(struct ms_idx_rd *rd, uint64_t mbox_id,
			uint64_t since_modseq, struct ms_idx_iter **it_r);
int ms_idx_changes_next(struct ms_idx_iter *it, struct ms_idx_change *c_r);
int ms_idx_expunged_iter(struct ms_idx_rd *rd, uint64_t mbox_id, uint64_t since,
			 struct ms_idx_iter **it_r);
int ms_idx_expunged_next(struct ms_idx_iter *it, struct ms_idx_msg *m_r);
int ms_idx_subs_iter(struct ms_idx_rd *rd, uint64_t user_id,
		     struct ms_idx_iter **it_r);
int ms_idx_subs_next(struct ms_idx_iter *it, const char **name_r,
		     size_t *len_r);
int ms_idx_segs_iter(struct ms_idx_rd *rd, struct ms_idx_iter **it_r);
int ms_idx_segs_next(struct ms_idx_iter *it, struct ms_idx_seg *s_r);
void ms_idx_iter_free(struct ms_idx_iter **it);

/* ---- whole-index checks ------------------------------------------------ */

/*
 * Canonical text of the whole committed index: the applied position and
 * counters, then every table in key order, one line per entry, every
 * field, names and keywords quoted with \xHH escapes.  Two indexes that
 * hold the same facts dump the same text (the "open" marker, store id
 * and map size are left out).  0; MS_ECORRUPT on a damaged value (the
 * dump stops there; *error_r is not available, the error is in the
 * output as a line "error: ..."); -errno on a write error.
 */
int ms_idx_dump(struct ms_idx *idx, FILE *out);
/*
 * Check every value and every invariant between tables: names map back
 * to ids, mailbox counters and quota use equal the sums of their
 * messages, every message has its modseq entry and body, refcounts and
 * live bytes equal what the messages imply, no body entry is without
 * location (so check a consistent point: see Bodies).  0 or MS_ECORRUPT with
 * *error_r naming the first failure.  Memory: O(messages).
 */
int ms_idx_check(struct ms_idx *idx, const char **error_r);

/* Tests: use this boot id instead of the kernel's (NULL: the kernel's). */
void ms_idx_test_boot_id(const char *boot_id);

#endif
