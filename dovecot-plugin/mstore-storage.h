/*
 * mstore-storage.h - the mstore mail storage driver for Dovecot 2.3.
 *
 * mstored is the truth for every mailbox and message fact (UIDVALIDITY,
 * UIDs, flags, keywords, expunges, bodies, GUIDs, sizes, dates); the
 * Dovecot index under mail_location is a cache of it, filled by the sync
 * (mstore-sync.c) from the store's change feed, plus the queue of IMAP
 * changes that the next sync pushes to the store.  Nothing else is kept
 * on local disk.  docs/dovecot-plugin.md says how it fits together.
 *
 * One store connection per storage (one per user and root); calls block
 * with a timeout.  A second connection, opened only while a client
 * IDLEs, carries the store's WAIT.
 */
#ifndef MSTORE_STORAGE_H
#define MSTORE_STORAGE_H

#include "hash.h"
#include "index-storage.h"
#include "index-mail.h"
#include "mailbox-list-private.h"

#define MSTORE_STORAGE_NAME "mstore"
#define MSTORE_MAILDIR_NAME "mstore-box"
#define MSTORE_MAILBOX_DIR_NAME "mailboxes"
#define MSTORE_SUBSCRIPTION_FILE_NAME "subscriptions"
/* Each read and write on the store socket is bounded by this. */
#define MSTORE_TIMEOUT_MSECS (60 * 1000)
/* Body chunk asked per FETCH_BODY. */
#define MSTORE_BODY_CHUNK (4u << 20)
/* A WAIT lasts at most this long; IDLE re-arms it. */
#define MSTORE_WAIT_MSECS (25 * 60 * 1000)
/* Read-ahead (Dovecot's mail_prefetch_count): FETCH_BODY requests sent
   before their mails are read, at most this many in flight, and at most
   this many body bytes in flight or read ahead and not yet taken by
   their mails. */
#define MSTORE_PREFETCH_MAX_MAILS 16
#define MSTORE_PREFETCH_MAX_BYTES (8u << 20)

struct ms_client;
struct ms_reply;
struct ms_req;

/* Per-mailbox header extension "mstore-hdr" in the Dovecot index. */
struct mstore_index_header {
	uint64_t mbox_id;     /* the store's id of the mailbox */
	uint64_t last_modseq; /* store highestmodseq the index has seen */
};

/* Header extension "mstore-guid": the store's mailbox GUID, cached so
   that an open need not ask for it (mailbox_get_metadata's GUID, which
   the mailbox list index wants at every SELECT). */
struct mstore_index_guid {
	uint64_t mbox_id; /* the store's mailbox the GUID is of */
	uint8_t guid[16];
};

/* A user's change count as mstored gave it (USER_WATCH): meaningful
   only with the epoch it came with.  Also the header extension
   "mstore-chg": the count as of which the index has every change of
   the store's mailbox (the sync that last pulled it). */
struct mstore_chg {
	uint64_t epoch; /* 0: none */
	uint64_t count;
};

/* Per-message record extension "mstore-rec". */
struct mstore_mail_rec {
	uint8_t guid[16];
	uint64_t physical_size;
	uint64_t virtual_size;
	int64_t received;
	int64_t saved;
};

/* A FETCH_BODY sent ahead on the storage's connection. */
struct mstore_prefetch {
	uint32_t id;
	/* NULL once the mail let go of it (closed, reused for another
	   message): the reply is read and dropped */
	struct mstore_mail *mail;
	/* the bytes counted for it in prefetch_bytes */
	uint64_t size;
};

/* A mailbox of the store as MBOX_LIST names it. */
struct mstore_store_mbox {
	const char *name;
	uint64_t mbox_id;
	uint64_t highestmodseq;
	uint32_t uidvalidity;
	bool subscribed;
};
ARRAY_DEFINE_TYPE(mstore_store_mbox, struct mstore_store_mbox);

#define MSTORE_PERM_CACHE 4
struct mstore_perm {
	struct mail_index *index;
	char *name, *origin; /* origin: perm.file_create_gid_origin's */
	struct mailbox_permissions perm;
};

struct mstore_storage {
	struct mail_storage storage;
	/* NOTIFY: the io on client that the list's watch added
	   (mstore_list_notify_wait), removed before client closes, and the
	   list's pointer to this storage, cleared when this goes */
	struct io *notify_io;
	struct mstore_storage **notify_owner;
	const char *socket_path;
	/* the store's user whose mail this storage holds: the namespace's
	   owner (the logged-in user, or another user for a shared
	   namespace), or plugin { mstore_public_user } for a public one */
	const char *store_user;
	struct ms_client *client;
	/* read-ahead requests in flight on client, oldest first; every
	   other request reads their replies first (ms_client_request()
	   drops replies that are not its own) */
	struct mstore_prefetch prefetch[MSTORE_PREFETCH_MAX_MAILS];
	unsigned int prefetch_count;
	/* bytes asked for by those requests, plus the bodies read ahead
	   that mails hold and have not taken yet */
	uint64_t prefetch_bytes;
	uint64_t user_id;
	/* the request id of a HELLO sent ahead on client whose reply is
	   still to be read (mstore_client_start), or 0 */
	uint32_t hello_id;
	/* an MBOX_STATUS sent by a mailbox's open before it opens the
	   index (mstore_status_ahead), whose reply is still to be read, or
	   0; and the mailbox it is for (NULL once that one closed) */
	uint32_t ahead_id;
	struct mstore_mailbox *ahead_mbox;
	/* the HELLO sent at login was refused, found while reading the
	   reply to a request sent ahead: the next request fails with it
	   (logged once) */
	bool hello_refused;
	/* counts requests and reads on client: a reply borrowed from it is
	   still valid while this has not moved */
	unsigned int req_seq;
	bool reconciled;
	/* the list index's checks of one ioloop run (a LIST-STATUS checks
	   every folder it lists): snap_run is that run's ioloop_timeval,
	   snap_checks the checks that asked the store in it; from the
	   second on, the store's mailboxes as one MBOX_LIST found them
	   (snap, sorted by name, in snap_pool) answer the rest */
	struct timeval snap_run;
	unsigned int snap_checks;
	bool snap_valid;
	pool_t snap_pool;
	ARRAY_TYPE(mstore_store_mbox) snap;
	/* the user's change count as of that list */
	struct mstore_chg snap_chg;
	/* per mailbox name, the count as of which the store was found as
	   the list index's record says (a check that asked the store; the
	   check cannot write the list index): that record holds while the
	   count has not moved since */
	HASH_TABLE(char *, struct mstore_chg *) list_checked;
	pool_t list_checked_pool;
	/* the store is a standby mstored (the DR site before promote):
	   every mailbox is read-only; known once asked (STATUS) or once a
	   write was refused with -EROFS, forgotten at a reconnect */
	bool standby, standby_known;
	/* the user's change count on client, and the epoch it goes with:
	   from its HELLO, then from its watch (mstore_chg_refresh) */
	bool chg_known;
	uint64_t chg_epoch, chg_count;
	/* chg_count was read from the socket (the watch polled) in the
	   ioloop run of chg_polled_run, when the process's count of
	   requests and reads was chg_polled_seq (0: no poll to go by):
	   while that count stays, another refresh in that run has nothing
	   new to find (mstore_chg_refresh_full) */
	struct timeval chg_polled_run;
	unsigned int chg_polled_seq;
	/* the store lists the user's subscriptions by name (MBOX_SUBS,
	   protocol version 8) */
	bool subs_known;
	/* the store deletes a mailbox only when empty if asked
	   (MS_MBOX_DELETE_EMPTY, protocol version 9) */
	bool delete_empty_known;
	/* the permissions Dovecot found for the folders opened last, by
	   stat() of each one's directory (mailbox_get_permissions), with
	   the index and name they are of: an open of the same folder while
	   that index stayed open in this process takes them instead of a
	   stat (mstore_mailbox_open).  A few, not one: Dovecot's quota
	   plugin opens INBOX between two APPENDs to Sent. */
	struct mstore_perm perms[MSTORE_PERM_CACHE];
	unsigned int perm_next;
};

struct mstore_idle;

struct mstore_mailbox {
	struct mailbox box;
	struct mstore_storage *storage;
	uint32_t hdr_ext_id;
	uint32_t rec_ext_id;
	uint32_t guid_ext_id;
	uint32_t chg_ext_id;
	/* the count as of which this process found the store with
	   nothing the index lacks (a sync that asked; not in the index:
	   only a locked sync writes there) */
	struct mstore_chg verified;
	uint64_t mbox_id;
	/* this process saved into the box: the next sync must pull even if
	   it is a FAST one, so that the saved UIDs are seen */
	bool pending_saves;
	/* inside mstore_sync() */
	bool syncing;
	/* deleted from the store: syncs stay local (mailbox deletion) */
	bool deleted;
	/* the store's mailbox GUID (MBOX_UPDATE), once read or set */
	bool have_guid;
	/* the sync replaced the cached GUID: the list index is to be read
	   (mstore_mailbox_open), so that this session's close writes the
	   new GUID into its record */
	bool list_guid_stale;
	guid_128_t guid;
	uint64_t guid_mbox_id; /* the store's mailbox id it is of */
	/* the open pulled from the store at synced_at (ioloop_timeval): a
	   full sync asked for in the same ioloop run (SELECT's, right
	   after its open) need not ask the store again */
	bool synced_at_open;
	struct timeval synced_at;
	/* inside mstore_transaction_commit()'s sync: it pushes changes,
	   whose replies say whether anything else changed the mailbox, so
	   it asks no CHANGES first */
	bool committing;
	/* the reply to the open's MBOX_STATUS sent ahead, read
	   (mstore_status_ahead_take): the store's mailbox as it was while
	   the index opened */
	bool ahead_have;
	uint32_t ahead_uidvalidity;
	uint64_t ahead_mbox_id, ahead_highestmodseq;
	/* set by the open for its sync only: the index was read from its
	   files just now and needs no refresh */
	bool index_fresh;
	/* set by the open for its sync only: the user's change count was
	   refreshed just now (mstore_chg_refresh) */
	bool chg_refreshed;
	struct mstore_idle *idle;
	/* FETCH ENVELOPE's lookup of the envelope's header fields, made
	   at the first (mstore-mail.c) */
	struct mailbox_header_lookup_ctx *envelope_headers;
	/* IDLE's store connection is away: the retries made since it went
	   (0: up).  Warned about once per outage. */
	unsigned int idle_retries;
};

struct mstore_mail {
	struct index_mail imail;
	/* the id of its FETCH_BODY sent ahead (0: none in flight) */
	uint32_t prefetch_id;
	/* that request's answer, until the stream takes it: the body's
	   first bytes (all of them unless it is larger than the request
	   asked for), its total size, and what prefetch_bytes counts for
	   it */
	buffer_t *prefetched;
	uint64_t prefetched_total;
	uint64_t prefetched_held;
	/* a store-side copy not sent yet (mstore-save.c) has no UID here:
	   read before the commit, its body is its source's */
	char *copy_src;
	uint32_t copy_src_uid;
};

#define MSTORE_STORAGE(s) (container_of(s, struct mstore_storage, storage))
#define MSTORE_MAILBOX(s) (container_of(s, struct mstore_mailbox, box))
#define MSTORE_MAIL(s) (container_of(s, struct mstore_mail, imail.mail.mail))

extern struct mail_storage mstore_storage;
extern struct mail_vfuncs mstore_mail_vfuncs;

/* mstore-client.c: the store connection of a storage. */
/* One request and its reply (borrowed from the connection's buffer until
   the next request).  Returns 0; a store status < -1 (the store's answer,
   MS_ENOTFOUND, -EEXIST, ...; the error is NOT set); or -1 for a failure
   of the connection or of the codec (critical error set; the connection
   is closed, and requests that are safe to repeat were retried once on a
   new one). */
int mstore_request_status(struct mstore_storage *storage,
			  const struct ms_req *q, struct ms_reply *rep_r);
/* Like mstore_request_status(), but every failure returns -1 with the
   storage's error set; *status_r (if not NULL) gets the store's status,
   or 0 for a transport failure. */
int mstore_request(struct mstore_storage *storage, const struct ms_req *q,
		   struct ms_reply *rep_r, int *status_r);
/* Set the storage error for a store status (MS_ENOTFOUND, -EEXIST, ...). */
void mstore_set_store_error(struct mstore_storage *storage, int status,
			    const char *what);
/* The mailbox GUID from an MBOX_UPDATE reply (the store's, or one
   derived from its mailbox id when none was set). */
void mstore_mailbox_guid_from(struct mstore_mailbox *mbox,
			      const struct ms_reply *rep);
/* A whole body into buf.  buf is empty (total 0), or holds the first
   bytes of a body of total bytes (read ahead), which are kept.  0, or
   -1 with the error set (the mail is marked expunged if the store no
   longer has it). */
int mstore_fetch_body(struct mstore_storage *storage, struct mail *mail,
		      const char *mailbox, uint32_t uid, buffer_t *buf,
		      uint64_t total);
/* Read-ahead of a mail's body (size: the expected one, from its
   record): a FETCH_BODY sent now, its reply read when the mail (or any
   other request) needs it.  FALSE if nothing was sent (over the bounds,
   no connection, a send failure): the mail reads its body itself. */
bool mstore_prefetch_body(struct mstore_storage *storage,
			  struct mstore_mail *mmail, const char *mailbox,
			  uint32_t uid, uint64_t size);
/* Read replies until the mail's read-ahead has its answer (in
   mmail->prefetched, or none if it failed or the connection broke). */
void mstore_prefetch_wait(struct mstore_storage *storage,
			  struct mstore_mail *mmail);
/* Read every read-ahead reply still in flight. */
void mstore_prefetch_drain(struct mstore_storage *storage);
/* The body read ahead for the mail, now the caller's, with its total
   size (more than the buffer holds if the rest is still to be read); NULL and
   0 if there is none. */
buffer_t *mstore_prefetch_take(struct mstore_storage *storage,
			       struct mstore_mail *mmail, uint64_t *total_r);
/* The mail no longer wants its read-ahead: a request in flight is
   dropped when its reply comes, a body read ahead is freed. */
void mstore_prefetch_release(struct mstore_storage *storage,
			     struct mstore_mail *mmail);
void mstore_client_disconnect(struct mstore_storage *storage);
/* Send MBOX_STATUS of the mailbox being opened (its store name) now,
   on a connection that is up and has nothing else in flight, so that
   the round trip overlaps the index's open; the reply is read by
   mstore_status_ahead_take() or by the next request. */
void mstore_status_ahead(struct mstore_storage *storage,
			 struct mstore_mailbox *mbox, const char *name);
/* Read the reply to the mailbox's MBOX_STATUS sent ahead, if it is
   still due.  TRUE if the store answered with the mailbox's info
   (mbox->ahead_*); FALSE for none sent, an error or a lost connection
   (the caller asks the usual way).  Taken once. */
bool mstore_status_ahead_take(struct mstore_mailbox *mbox);
/* The open that sent it is over: a reply still due is read and dropped
   by the next request. */
void mstore_status_ahead_forget(struct mstore_mailbox *mbox);
/* The header extension ext_id of view copied into dst (size bytes); TRUE
   if the index has that much of it, else dst is all zeros. */
bool mstore_index_ext_get(struct mail_index_view *view, uint32_t ext_id,
			  void *dst, size_t size);
/* The change count the index (as view has it) has the store's mailbox
   as of: its own ("mstore-chg"), or the newer one this process found
   the store with nothing the index lacked at (mbox->verified); epoch 0
   if none. */
void mstore_index_chg(struct mstore_mailbox *mbox,
		      struct mail_index_view *view, struct mstore_chg *chg_r);
/* Connect and send HELLO without waiting for the reply, which the first
   request reads: the round trip overlaps whatever the process does until
   then.  A failure is silent here; the first request reports it. */
void mstore_client_start(struct mstore_storage *storage);
/* mail_user_created hook: connect and send HELLO for the user whose mail
   is in mstore, before Dovecot answers LOGIN; the storage takes the
   connection (mstore_client_start). */
void mstore_user_created(struct mail_user *user);
/* The user's change count (docs/dovecot-plugin.md, "The user's change
   count"): as of the reply just read (FALSE: not known); brought up to
   what the connection holds, without waiting (FALSE: cannot tell now);
   whether chg is the current count, or (protocol version 7) a count at
   or after the last change of the store's mailbox mbox_id (0: none). */
bool mstore_chg_snapshot(struct mstore_storage *storage,
			 struct mstore_chg *snap_r);
bool mstore_chg_refresh(struct mstore_storage *storage);
/* The same, but when the reply to the HELLO sent at login is not in yet,
   FALSE with *hello_late_r set, at once. */
bool mstore_chg_refresh_nowait(struct mstore_storage *storage,
			       bool *hello_late_r);
bool mstore_chg_current(struct mstore_storage *storage,
			const struct mstore_chg *chg, uint64_t mbox_id);
/* Whether the store refuses writes (a standby): asked once per
   connection with STATUS ("repl.standby"); FALSE if it cannot say. */
bool mstore_storage_is_standby(struct mstore_storage *storage);
/* A fresh connection, said HELLO as the user (for IDLE).  NULL on error,
   logged. */
/* Another connection to the store, HELLO said; NULL with error_r set
   (nothing logged) when it cannot be made. */
struct ms_client *mstore_client_open_extra(struct mstore_storage *storage,
					   const char **error_r);

/* mstore-storage.c */
/* A mailbox_update's store part (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ,
   mailbox GUID) sent as MBOX_UPDATE when it changes something, then the
   box pulled from the store.  0 or -1 with the error set. */
int mstore_mailbox_update_store(struct mstore_mailbox *mbox,
				const struct mailbox_update *update);
/* The store's name of a mailbox (UTF-8, '/' separated); data stack. */
const char *mstore_box_store_name(struct mailbox *box);
/* A UID set for a request, of Dovecot's ranges; data stack. */
struct ms_uid_set mstore_uid_set(const ARRAY_TYPE(seq_range) *uids);
/* Store flags (MS_EVENT_FLAG_*) <-> Dovecot's. */
uint32_t mstore_flags_to_store(enum mail_flags flags);
enum mail_flags mstore_flags_from_store(uint32_t flags);

/* mstore-sync.c */
struct mailbox_sync_context *
mstore_mailbox_sync_init(struct mailbox *box, enum mailbox_sync_flags flags);
enum mstore_sync_flags {
	/* pull from modseq 0 with a complete comparison */
	MSTORE_SYNC_FULL = 0x01,
	/* take no \Recent (a FAST sync that pulls, as Dovecot's formats
	   do not sync their storage then) */
	MSTORE_SYNC_KEEP_RECENT = 0x02,
};
/* Push pending changes and pull the store's.  1: an index sync was made;
   0: there was nothing to do (the index and its views are as they were);
   -1 with the error set. */
int mstore_sync(struct mstore_mailbox *mbox, enum mstore_sync_flags flags);
/* The open box's view brought up to the index after mstore_sync(). */
void mstore_sync_view_refresh(struct mailbox *box);
void mstore_notify_changes(struct mailbox *box);
void mstore_idle_stop(struct mstore_mailbox *mbox);

/* mstore-save.c */
struct mail_save_context *
mstore_save_alloc(struct mailbox_transaction_context *t);
int mstore_save_begin(struct mail_save_context *ctx, struct istream *input);
int mstore_save_continue(struct mail_save_context *ctx);
int mstore_save_finish(struct mail_save_context *ctx);
void mstore_save_cancel(struct mail_save_context *ctx);
int mstore_copy(struct mail_save_context *ctx, struct mail *mail);
int mstore_transaction_save_commit_pre(struct mail_save_context *ctx);
/* The transaction's held saves and gathered copies sent now (before its
   external expunges, mstore_transaction_commit); -1: the caller rolls
   the transaction back. */
int mstore_transaction_save_flush(struct mail_save_context *ctx);
void mstore_transaction_save_commit_post(
	struct mail_save_context *ctx,
	struct mail_index_transaction_commit_result *result);
void mstore_transaction_save_rollback(struct mail_save_context *ctx);

/* mstore-mail.c */
struct mail *mstore_mail_alloc(struct mailbox_transaction_context *t,
			       enum mail_fetch_field wanted_fields,
			       struct mailbox_header_lookup_ctx *wanted_headers);
/* The message's record from the index; FALSE if there is none. */
bool mstore_mail_get_rec(struct mail *mail, struct mstore_mail_rec *rec_r);

#endif
