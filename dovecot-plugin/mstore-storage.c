/*
 * mstore-storage.c - the storage class and the mailbox vtable.
 *
 * Folders live in the store; Dovecot's fs-layout mailbox list under
 * mail_location mirrors them, one directory per mailbox holding only the
 * index cache (like sdbox's, without any mail files).  CREATE, RENAME,
 * DELETE and SUBSCRIBE go to the store first, then to the local list.
 * The local list is completed from the store's MBOX_LIST (mstore_reconcile)
 * at a session's first folder listing (LIST, LSUB, doveadm mailbox list)
 * and whenever a mailbox being opened is not here, so a lost index
 * directory comes back with every folder and subscription.  Not at login:
 * Dovecot answers LOGIN before it creates the namespaces, and a client's
 * first command (a SELECT INBOX) would wait for the store's folder list.
 * Opening a mailbox checks it in the store and pulls its changes, so
 * STATUS and SELECT see what others did.
 */
#include "lib.h"
#include "array.h"
#include "str.h"
#include "ioloop.h"
#include "time-util.h"
#include "guid.h"
#include "mail-namespace.h"
#include "mail-user.h"
#include "mail-storage-hooks.h"
#include "mailbox-list-private.h"
#include "mailbox-list-iter.h"
#include "mailbox-list-index.h"
#include "mailbox-tree.h"
#include "index-mail.h"
#include "mail-index-modseq.h"
#include "mail-index-transaction-private.h"
#include "mail-cache-private.h"
#include "mail-search-build.h"
#include "mstore-storage.h"

#include <errno.h>
#include <sys/stat.h>

#include "client.h"
#include "ms.h"

extern struct mailbox mstore_mailbox;

static struct event_category event_category_mstore = {
	.name = "mstore",
	.parent = &event_category_storage,
};

uint32_t mstore_flags_to_store(enum mail_flags flags)
{
	uint32_t f = 0;

	if ((flags & MAIL_SEEN) != 0)
		f |= MS_EVENT_FLAG_SEEN;
	if ((flags & MAIL_ANSWERED) != 0)
		f |= MS_EVENT_FLAG_ANSWERED;
	if ((flags & MAIL_FLAGGED) != 0)
		f |= MS_EVENT_FLAG_FLAGGED;
	if ((flags & MAIL_DELETED) != 0)
		f |= MS_EVENT_FLAG_DELETED;
	if ((flags & MAIL_DRAFT) != 0)
		f |= MS_EVENT_FLAG_DRAFT;
	return f;
}

enum mail_flags mstore_flags_from_store(uint32_t f)
{
	enum mail_flags flags = 0;

	if ((f & MS_EVENT_FLAG_SEEN) != 0)
		flags |= MAIL_SEEN;
	if ((f & MS_EVENT_FLAG_ANSWERED) != 0)
		flags |= MAIL_ANSWERED;
	if ((f & MS_EVENT_FLAG_FLAGGED) != 0)
		flags |= MAIL_FLAGGED;
	if ((f & MS_EVENT_FLAG_DELETED) != 0)
		flags |= MAIL_DELETED;
	if ((f & MS_EVENT_FLAG_DRAFT) != 0)
		flags |= MAIL_DRAFT;
	return flags;
}

/* A private namespace beside the user's INBOX one (lazy_expunge's
   "expunged/", an archive namespace): not the INBOX namespace, with a
   prefix.  Its folders keep the prefix in the store ("expunged/INBOX"),
   so that they are its own: with the prefix dropped, "expunged/INBOX"
   was the store's INBOX, and a message that lazy_expunge moved there on
   EXPUNGE came back into the INBOX.  (An alias of the INBOX namespace,
   alias_for, has the INBOX flag too, and Dovecot hands its names to the
   namespace it stands for before a storage sees them.) */
static bool mstore_ns_keeps_prefix(const struct mail_namespace *ns)
{
	return ns->type == MAIL_NAMESPACE_TYPE_PRIVATE &&
	       (ns->flags & NAMESPACE_FLAG_INBOX_USER) == 0 &&
	       ns->prefix_len > 0;
}

/* The namespace's separator and '/' swapped in s from start on. */
static const char *mstore_sep_swap(const char *s, size_t start, char sep)
{
	if (sep == '/')
		return s;
	char *t = t_strdup_noconst(s);
	for (char *p = t + start; *p != '\0'; p++) {
		if (*p == sep)
			*p = '/';
		else if (*p == '/')
			*p = sep;
	}
	return t;
}

/* vname -> the store's name: the namespace prefix dropped (but see
   mstore_ns_keeps_prefix), the namespace's separator turned into '/'. */
static const char *
mstore_vname_to_store(struct mail_namespace *ns, const char *vname)
{
	if (strcasecmp(vname, "INBOX") == 0)
		return "INBOX";
	if (ns->prefix_len > 0 && !mstore_ns_keeps_prefix(ns) &&
	    strncmp(vname, ns->prefix, ns->prefix_len) == 0)
		vname += ns->prefix_len;
	return mstore_sep_swap(vname, 0, mail_namespace_get_sep(ns));
}

static const char *
mstore_store_to_vname(struct mail_namespace *ns, const char *name)
{
	if (strcmp(name, "INBOX") == 0 && (ns->flags & NAMESPACE_FLAG_INBOX_USER) != 0)
		return "INBOX";
	if (mstore_ns_keeps_prefix(ns))
		return mstore_sep_swap(name, 0, mail_namespace_get_sep(ns));
	return mstore_sep_swap(t_strconcat(ns->prefix, name, NULL),
			       ns->prefix_len, mail_namespace_get_sep(ns));
}

/* Whether the store's folder name is one of the namespace's: a
   namespace that keeps its prefix has the names under it; the INBOX
   namespace (and its aliases) every other name; a shared or public
   namespace every folder of its store user. */
static bool mstore_ns_owns(struct mail_namespace *ns, const char *name)
{
	if (ns->type != MAIL_NAMESPACE_TYPE_PRIVATE)
		return TRUE;
	if (mstore_ns_keeps_prefix(ns))
		return str_begins(name, mstore_vname_to_store(ns, ns->prefix));
	for (struct mail_namespace *o = ns->user->namespaces; o != NULL;
	     o = o->next) {
		if (o != ns && mstore_ns_keeps_prefix(o) &&
		    o->storage != NULL &&
		    strcmp(o->storage->name, MSTORE_STORAGE_NAME) == 0 &&
		    str_begins(name, mstore_vname_to_store(o, o->prefix)))
			return FALSE;
	}
	return TRUE;
}

const char *mstore_box_store_name(struct mailbox *box)
{
	if (box->inbox_user)
		return "INBOX";
	return mstore_vname_to_store(box->list->ns, box->vname);
}

struct ms_uid_set mstore_uid_set(const ARRAY_TYPE(seq_range) *uids)
{
	const struct seq_range *r;
	unsigned int n;

	r = array_get(uids, &n);
	struct ms_uid_range *ranges = t_new(struct ms_uid_range, n);
	for (unsigned int i = 0; i < n; i++) {
		ranges[i].lo = r[i].seq1;
		ranges[i].hi = r[i].seq2;
	}
	return (struct ms_uid_set){ .n = n, .list = ranges };
}

/* ---- storage ---- */

static struct mail_storage *mstore_storage_alloc(void)
{
	struct mstore_storage *storage;
	pool_t pool;

	pool = pool_alloconly_create("mstore storage", 512);
	storage = p_new(pool, struct mstore_storage, 1);
	storage->storage = mstore_storage;
	storage->storage.pool = pool;
	return &storage->storage;
}

static int mstore_storage_create(struct mail_storage *_storage,
				 struct mail_namespace *ns,
				 const char **error_r)
{
	struct mstore_storage *storage = MSTORE_STORAGE(_storage);
	const char *path;

	path = mail_user_plugin_getenv(_storage->user, "mstore_socket");
	if (path == NULL || *path == '\0') {
		*error_r = "mstore: plugin { mstore_socket } is not set";
		return -1;
	}
	storage->socket_path = p_strdup(_storage->pool, path);
	if (ns->type == MAIL_NAMESPACE_TYPE_PUBLIC) {
		/* a public namespace has no owner: its folders are one
		   store user's, named by the setting */
		const char *pub = mail_user_plugin_getenv(_storage->user,
			"mstore_public_user");
		if (pub == NULL || *pub == '\0') {
			*error_r = "mstore: a public namespace needs "
				"plugin { mstore_public_user }: the store "
				"user whose folders it shows";
			return -1;
		}
		storage->store_user = p_strdup(_storage->pool, pub);
	} else {
		/* a shared namespace's storage is made by the user who
		   looks into another's folders: the owner's are asked for */
		storage->store_user = p_strdup(_storage->pool,
			ns->owner != NULL ? ns->owner->username :
			_storage->user->username);
	}
	_storage->unique_root_dir =
		p_strdup(_storage->pool, ns->list->set.root_dir);
	/* the user's own folders are asked for at once; another user's
	   (a shared or public namespace, made for each owner a LIST
	   finds) connect at their first request */
	if (ns->type == MAIL_NAMESPACE_TYPE_PRIVATE && !ns->user->autocreated)
		mstore_client_start(storage);
	return 0;
}

static void mstore_storage_destroy(struct mail_storage *_storage)
{
	struct mstore_storage *storage = MSTORE_STORAGE(_storage);

	mstore_client_disconnect(storage);
	/* a NOTIFY watch of its list: that list no longer names it */
	if (storage->notify_owner != NULL)
		*storage->notify_owner = NULL;
	pool_unref(&storage->snap_pool);
	if (hash_table_is_created(storage->list_checked))
		hash_table_destroy(&storage->list_checked);
	pool_unref(&storage->list_checked_pool);
	for (unsigned int i = 0; i < MSTORE_PERM_CACHE; i++) {
		i_free(storage->perms[i].name);
		i_free(storage->perms[i].origin);
	}
	index_storage_destroy(_storage);
}

static void
mstore_storage_get_list_settings(const struct mail_namespace *ns ATTR_UNUSED,
				 struct mailbox_list_settings *set)
{
	if (set->layout == NULL)
		set->layout = MAILBOX_LIST_NAME_FS;
	if (set->subscription_fname == NULL)
		set->subscription_fname = MSTORE_SUBSCRIPTION_FILE_NAME;
	if (*set->maildir_name == '\0')
		set->maildir_name = MSTORE_MAILDIR_NAME;
	if (*set->mailbox_dir_name == '\0')
		set->mailbox_dir_name = MSTORE_MAILBOX_DIR_NAME;
}

static struct mailbox *
mstore_mailbox_alloc(struct mail_storage *storage, struct mailbox_list *list,
		     const char *vname, enum mailbox_flags flags)
{
	struct mstore_mailbox *mbox;
	pool_t pool;

	flags &= ENUM_NEGATE(MAILBOX_FLAG_NO_INDEX_FILES);
	pool = pool_alloconly_create("mstore mailbox", 1024 * 3);
	mbox = p_new(pool, struct mstore_mailbox, 1);
	mbox->box = mstore_mailbox;
	mbox->box.pool = pool;
	mbox->box.storage = storage;
	mbox->box.list = list;
	mbox->box.mail_vfuncs = &mstore_mail_vfuncs;
	index_storage_mailbox_alloc(&mbox->box, vname, flags,
				    MAIL_INDEX_PREFIX);
	mbox->storage = MSTORE_STORAGE(storage);
	return &mbox->box;
}

/* ---- mailbox ---- */

static int mstore_mailbox_alloc_index(struct mstore_mailbox *mbox)
{
	if (index_storage_mailbox_alloc_index(&mbox->box) < 0)
		return -1;
	mbox->hdr_ext_id = mail_index_ext_register(mbox->box.index,
		"mstore-hdr", sizeof(struct mstore_index_header), 0, 0);
	mbox->rec_ext_id = mail_index_ext_register(mbox->box.index,
		"mstore-rec", 0, sizeof(struct mstore_mail_rec),
		sizeof(uint64_t));
	mbox->guid_ext_id = mail_index_ext_register(mbox->box.index,
		"mstore-guid", sizeof(struct mstore_index_guid), 0, 0);
	mbox->chg_ext_id = mail_index_ext_register(mbox->box.index,
		"mstore-chg", sizeof(struct mstore_chg), 0, 0);
	return 0;
}

static void mstore_reconcile(struct mail_namespace *ns);

/* An mstore namespace whose list may be completed now: not while
   Dovecot's list index reads the disk (its sync asks existence questions
   of each folder it walks; folders made or removed under it would be
   missed or half seen).  A shared namespace's per-owner namespace (an
   mstore storage speaking as the owner) and a public one are completed
   too: their folders are made by others. */
static bool mstore_ns_is_ours(const struct mail_namespace *ns)
{
	if (ns == NULL || ns->storage == NULL ||
	    strcmp(ns->storage->name, MSTORE_STORAGE_NAME) != 0 ||
	    ns->alias_for != NULL)
		return FALSE;
	struct mailbox_list_index *ilist = INDEX_LIST_CONTEXT(ns->list);
	return ilist == NULL || !ilist->syncing;
}

/* The local list lacks a mailbox being opened: if the store has it (a
   lost index directory, a folder made by another host), complete the
   list from the store first, as often as that happens.  One MBOX_STATUS
   finds out, so that opening names the store does not have either (a
   client probing, a typo) costs no listing.  1: completed; 0: nothing to
   do (not our namespace, or the store lacks it too); -1: the store could
   not say (error set). */
static int mstore_reconcile_for(struct mailbox *box)
{
	struct mail_namespace *ns = box->list->ns;
	struct mstore_storage *storage;
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	int status;

	if (!mstore_ns_is_ours(ns))
		return 0;
	storage = MSTORE_STORAGE(ns->storage);
	T_BEGIN {
		q.u.mbox.name = ms_pstr_c(mstore_box_store_name(box));
		status = mstore_request_status(storage, &q, &rep);
	} T_END;
	if (status == MS_ENOTFOUND)
		return 0;
	if (status < -1)
		mstore_set_store_error(storage, status, "MBOX_STATUS");
	if (status < 0)
		return -1;
	storage->reconciled = FALSE;
	T_BEGIN {
		mstore_reconcile(ns);
	} T_END;
	return 1;
}

/* Dovecot's question whether a folder exists is answered from the local
   list.  A folder that the store has and the list lacks (the index
   cache lost, the folder made through another host or a tool) is added
   from the store first, as at an open: GETMETADATA and SETMETADATA,
   doveadm and the plugins ask this without opening. */
static int mstore_mailbox_exists(struct mailbox *box, bool auto_boxes,
				 enum mailbox_existence *existence_r)
{
	int ret;

	if (index_storage_mailbox_exists(box, auto_boxes, existence_r) < 0)
		return -1;
	/* INBOX is left to Dovecot, which makes its folder at its first
	   open */
	if (*existence_r != MAILBOX_EXISTENCE_NONE || box->inbox_user)
		return 0;
	if ((ret = mstore_reconcile_for(box)) <= 0)
		return ret;
	return index_storage_mailbox_exists(box, auto_boxes, existence_r);
}

static int mstore_mailbox_check_existence(struct mailbox *box)
{
	const char *box_path = mailbox_get_path(box);
	struct stat st;

	if (stat(box_path, &st) == 0)
		return 0;
	/* opening what is not here: the store may have it (made by
	   another host since this session last listed) */
	if (errno == ENOENT) {
		int ret = mstore_reconcile_for(box);
		if (ret < 0)
			return -1;
		if (ret == 0)
			errno = ENOENT;
		else if (stat(box_path, &st) == 0)
			return 0;
	}
	if (errno == ENOENT || errno == ENAMETOOLONG) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
			T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
	} else if (errno == EACCES) {
		mailbox_set_critical(box, "%s",
			mail_error_eacces_msg("stat", box_path));
	} else {
		mailbox_set_critical(box, "stat(%s) failed: %m", box_path);
	}
	return -1;
}

/*
 * Dovecot keeps a mailbox's index open between opens in one process
 * (mail_index_alloc_cache), and each open registers the cache fields of
 * the settings again.  A forced decision (mail_never_cache_fields,
 * mail_always_cache_fields) is then marked changed though it is what it
 * was, and the next close of a transaction locks dovecot.index.cache
 * and writes its field header again: a lock, two writes and an unlock
 * for every APPEND of a session with nothing selected.  When the file's
 * newest field header already holds every last use and decision that
 * write would put there, the write would change nothing: the mark is
 * taken back, as the write would have done.  Anything that differs (a
 * field used, a decision another process wrote) keeps the write.
 */
static bool mstore_cache_header_current(struct mail_cache *cache)
{
	const struct mail_cache_header_fields *fh;
	const void *data;
	uint32_t offset = cache->last_field_header_offset;
	unsigned int count = cache->file_fields_count;

	if (MAIL_CACHE_IS_UNUSABLE(cache) || cache->locked || cache->purging ||
	    offset == 0 || count == 0)
		return FALSE;
	if (mail_cache_map(cache, offset, MAIL_CACHE_FIELD_NAMES(count),
			   &data) <= 0)
		return FALSE;
	fh = data;
	/* a newer header (another process added fields) is Dovecot's to
	   read */
	if (fh->next_offset != 0 || fh->fields_count != count ||
	    fh->size < MAIL_CACHE_FIELD_NAMES(count))
		return FALSE;
	const uint32_t *last_used =
		CONST_PTR_OFFSET(fh, MAIL_CACHE_FIELD_LAST_USED());
	const uint8_t *decisions =
		CONST_PTR_OFFSET(fh, MAIL_CACHE_FIELD_DECISION(count));
	for (unsigned int i = 0; i < count; i++) {
		const struct mail_cache_field *f =
			&cache->fields[cache->file_field_map[i]].field;
		if ((uint32_t)f->last_used != last_used[i] ||
		    (uint8_t)f->decision != decisions[i])
			return FALSE;
	}
	return TRUE;
}

static void mstore_cache_header_settle(struct mailbox *box)
{
	struct mail_cache *cache = box->cache;

	if (cache == NULL || !cache->field_header_write_pending ||
	    !mstore_cache_header_current(cache))
		return;
	/* what mail_cache_header_fields_update() leaves after writing */
	for (unsigned int i = 0; i < cache->file_fields_count; i++)
		cache->fields[i].decision_dirty = FALSE;
	cache->field_header_write_pending = FALSE;
}

/*
 * A client with no folder selected opens the folder again for each
 * APPEND or STATUS, and each open found the folder's directory by three
 * stat()s of it and one of its parent: ours (does it exist?), two of
 * Dovecot's index cache (mail_index_alloc_cache_get: is an index of this
 * directory still open in this process?), and the permissions' (of the
 * name's directory).  The index cache hands back an index still open
 * only after its own stat() found the directory with the inode that
 * index was opened with, so such an index says the folder is there as
 * our stat would, and the permissions found at that index's open are
 * the folder's still (what Dovecot keeps for a selected folder's whole
 * life too).  Where the index has a directory of its own (an INDEX= in
 * mail_location), allocating it may create that directory, and the
 * order stays: existence first.
 */
static bool mstore_mailbox_index_is_dir(struct mailbox *box)
{
	const char *mail_dir, *index_dir;

	return mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_MAILBOX,
				   &mail_dir) > 0 &&
	       mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_INDEX,
				   &index_dir) > 0 &&
	       strcmp(mail_dir, index_dir) == 0;
}

static struct mstore_perm *
mstore_perm_find(struct mstore_storage *storage, struct mailbox *box)
{
	for (unsigned int i = 0; i < MSTORE_PERM_CACHE; i++) {
		struct mstore_perm *p = &storage->perms[i];

		if (p->index == box->index && p->name != NULL &&
		    strcmp(p->name, box->name) == 0)
			return p;
	}
	return NULL;
}

static bool mstore_perm_take(struct mailbox *box)
{
	struct mstore_storage *storage = MSTORE_MAILBOX(box)->storage;
	struct mstore_perm *p;

	if (box->_perm.file_create_mode != 0 ||
	    (p = mstore_perm_find(storage, box)) == NULL)
		return FALSE;
	box->_perm = p->perm;
	box->_perm.file_create_gid_origin = p_strdup(box->pool, p->origin);
	/* the index is told them again, as at a first open */
	box->_perm.mail_index_permissions_set = FALSE;
	return TRUE;
}

/* Permissions found by this open (not taken) are kept for the next, in
   place of what was kept for the same index and name (an index freed
   and another allocated at its address for a folder made again), or of
   the oldest. */
static void mstore_perm_keep(struct mailbox *box)
{
	struct mstore_storage *storage = MSTORE_MAILBOX(box)->storage;
	struct mstore_perm *p;

	if (box->_perm.file_create_mode == 0 || box->index == NULL)
		return;
	if ((p = mstore_perm_find(storage, box)) == NULL) {
		p = &storage->perms[storage->perm_next];
		storage->perm_next = (storage->perm_next + 1) %
			MSTORE_PERM_CACHE;
	}
	i_free(p->name);
	i_free(p->origin);
	p->index = box->index;
	p->name = i_strdup(box->name);
	p->origin = i_strdup(box->_perm.file_create_gid_origin);
	p->perm = box->_perm;
	p->perm.file_create_gid_origin = NULL;
}

/* MODSEQs on in the index.  Dovecot notes them on in the index object,
   which its cache of open indexes keeps: after the folder's index files
   were made again under the same path (INBOX deleted and made again by
   doveadm backup, its log reset), the note outlived the files, no
   MODSEQ extension was written, and the next MODSEQ update was
   "modseqs updated before they were enabled" (a corrupted index, fscked
   by Dovecot). */
static void mstore_modseq_enable(struct mail_index *index)
{
	uint32_t ext_idx;

	if (index->modseqs_enabled && index->map != NULL &&
	    !mail_index_map_get_ext_idx(index->map, index->modseq_ext_id,
					&ext_idx))
		index->modseqs_enabled = FALSE;
	mail_index_modseq_enable(index);
}

static int mstore_mailbox_open(struct mailbox *box)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	bool indexed = FALSE, index_open = FALSE;

	if (!box->creating && mstore_mailbox_index_is_dir(box)) {
		if (mstore_mailbox_alloc_index(mbox) < 0)
			return -1;
		indexed = TRUE;
		index_open = box->index->open_count > 0;
	}
	if (!box->creating && !index_open &&
	    mstore_mailbox_check_existence(box) < 0)
		return -1;
	if (!indexed && mstore_mailbox_alloc_index(mbox) < 0)
		return -1;
	bool perm_taken = index_open && mstore_perm_take(box);
	mbox->chg_refreshed = FALSE;
	/* The user's change count says whether the store changed since
	   the index was synced; it comes with the reply to the HELLO sent
	   at login.  When that is not in yet (the first command of a
	   session: mstored had the LOGIN reply's way to the client and
	   back to answer), the index opens first and the sync below waits
	   for it, rather than this open: mstored answers meanwhile. */
	bool hello_late = FALSE;
	if (!box->creating && (box->flags & MAILBOX_FLAG_SAVEONLY) == 0 &&
	    !(mbox->chg_refreshed =
		      mstore_chg_refresh_nowait(mbox->storage, &hello_late)) &&
	    !hello_late) {
		/* the sync below compares the index with this, which
		   comes back while the index opens (mstore_sync_ask_first);
		   with the user's change count known, the sync can tell
		   from it whether to ask at all */
		T_BEGIN {
			mstore_status_ahead(mbox->storage, mbox,
					    mstore_box_store_name(box));
		} T_END;
	}
	bool fresh = box->index->open_count == 0;
	if (index_storage_mailbox_open(box, FALSE) < 0) {
		mstore_status_ahead_forget(mbox);
		return -1;
	}
	if (!perm_taken)
		mstore_perm_keep(box);
	mstore_cache_header_settle(box);
	/* MODSEQs always, so that they follow the store's from the start
	   (mstore-sync.c), not only once a client enables CONDSTORE */
	mstore_modseq_enable(box->index);
	if (box->creating)
		return 0; /* create_box binds it to the store */
	if ((box->flags & MAILBOX_FLAG_SAVEONLY) != 0 &&
	    mail_index_get_header(box->view)->uid_validity != 0)
		return 0; /* delivery: nothing to read */
	/* this sync's index was just read from its files: no refresh */
	mbox->index_fresh = fresh;
	int ret = mstore_sync(mbox, 0);
	/* the reply sent ahead and the fresh index are about this open
	   only (its sync took them, unless it had no use for them) */
	mbox->index_fresh = FALSE;
	mbox->chg_refreshed = FALSE;
	mstore_status_ahead_forget(mbox);
	if (ret < 0)
		return -1;
	/* the view, opened with the index read from its files a moment
	   ago, needs no sync when the sync had nothing to do */
	if (ret > 0 || !fresh)
		mstore_sync_view_refresh(box);
	if (mbox->list_guid_stale) {
		/* the list index updates a mailbox's record at the end of
		   its sync only once it has been read in this session */
		mbox->list_guid_stale = FALSE;
		if (INDEX_LIST_CONTEXT(box->list) != NULL)
			(void)mailbox_list_index_refresh(box->list);
	}
	mbox->synced_at_open = TRUE;
	mbox->synced_at = ioloop_timeval;
	return 0;
}

static void mstore_mailbox_close(struct mailbox *box)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);

	mstore_idle_stop(mbox);
	if (mbox->envelope_headers != NULL)
		mailbox_header_lookup_unref(&mbox->envelope_headers);
	/* its mails are gone: replies to their read-ahead are dropped
	   now rather than left on the connection */
	mstore_prefetch_drain(mbox->storage);
	index_storage_mailbox_close(box);
}

/*
 * Dovecot's list index marks itself for a rescan after a folder is made,
 * deleted or renamed (mailbox_list_index_refresh_later()), but skips the
 * mark when this process's view of the list index still shows an earlier
 * mark, which another session may have consumed since: that session's
 * next LIST then misses the change for good (Dovecot 2.3; mdbox does the
 * same: after one session's DELETE of a folder with children, and
 * another's LIST, the first session's next CREATE stays unlisted in the
 * other).  Called once this process's change is on disk, with the view
 * refreshed first, the mark is there unless one is pending that a later
 * rescan (after the change) consumes.
 */
static void mstore_list_index_changed(struct mailbox_list *list)
{
	struct mailbox_list_index *ilist = INDEX_LIST_CONTEXT(list);

	if (ilist == NULL || !ilist->has_backing_store ||
	    mailbox_list_index_index_open(list) < 0)
		return;
	(void)mail_index_refresh(ilist->index);
	mailbox_list_index_refresh_later(list);
}

/* Remove the local folder of a create the store did not take, keeping
   the storage's error for the client. */
static void mstore_mailbox_create_undo(struct mailbox *box)
{
	struct mailbox_list *list = box->list;
	enum mail_error error;
	const char *errstr = mail_storage_get_last_error(box->storage, &error);

	errstr = t_strdup(errstr);
	if (list->v.delete_mailbox(list, box->name) == 0)
		(void)mailbox_list_delete_dir(list, box->name);
	mail_storage_set_error(box->storage, error, errstr);
}

static int mstore_mailbox_create(struct mailbox *box,
				 const struct mailbox_update *update,
				 bool directory)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct ms_req q = { .op = MS_OP_MBOX_CREATE };
	struct ms_reply rep;
	int ret;

	if ((ret = index_storage_mailbox_create(box, directory)) < 0)
		return ret;
	mstore_list_index_changed(box->list);
	if (ret == 0)
		return 0;

	q.u.mbox.name = ms_pstr_c(mstore_box_store_name(box));
	if (box->set != NULL && box->set->special_use != NULL) {
		/* special_use from mailbox { } settings */
		const char *su = box->set->special_use;
		uint32_t bits = 0;
		if (strstr(su, "\\All") != NULL) bits |= MS_EVENT_SU_ALL;
		if (strstr(su, "\\Archive") != NULL) bits |= MS_EVENT_SU_ARCHIVE;
		if (strstr(su, "\\Drafts") != NULL) bits |= MS_EVENT_SU_DRAFTS;
		if (strstr(su, "\\Flagged") != NULL) bits |= MS_EVENT_SU_FLAGGED;
		if (strstr(su, "\\Junk") != NULL) bits |= MS_EVENT_SU_JUNK;
		if (strstr(su, "\\Sent") != NULL) bits |= MS_EVENT_SU_SENT;
		if (strstr(su, "\\Trash") != NULL) bits |= MS_EVENT_SU_TRASH;
		q.u.mbox.special_use = bits;
	}
	/* a standby (known from HELLO) is not asked to write: it would
	   refuse, and count the refusal as an error */
	ret = mstore_storage_is_standby(mbox->storage) ? -EROFS :
		mstore_request_status(mbox->storage, &q, &rep);
	if (ret == -EROFS) {
		/* a standby: it may still have the mailbox (the folder-list
		   reconcile restores the store's folders here) */
		struct ms_req sq = { .op = MS_OP_MBOX_STATUS };
		sq.u.mbox.name = q.u.mbox.name;
		int sret = mstore_request_status(mbox->storage, &sq, &rep);
		if (sret == -1)
			return -1;
		if (sret == 0)
			ret = -EEXIST;
	}
	if (ret == -EEXIST) {
		/* the store has it and this index did not: bind to it (a
		   lost index, or a folder made by another host) */
		ret = 0;
	} else if (ret < 0) {
		/* the store refused (its max_mailboxes, a name it does not
		   take) or could not be asked: the folder that
		   index_storage_mailbox_create made here goes again, so that
		   no listing shows a mailbox the store does not have */
		if (ret < -1)
			mstore_set_store_error(mbox->storage, ret, "CREATE");
		mstore_mailbox_create_undo(box);
		return -1;
	}
	if (mailbox_open(box) < 0)
		return -1;
	/* fill the index from the store (UIDVALIDITY, messages) */
	if (mstore_sync(mbox, 0) < 0)
		return -1;
	mstore_sync_view_refresh(box);
	/* dsync (doveadm backup/sync) creates with the source's
	   UIDVALIDITY and mailbox GUID */
	if (update != NULL && mstore_mailbox_update_store(mbox, update) < 0)
		return -1;
	return 0;
}

/* The MBOX_UPDATE reply's GUID, or the one derived from the store's
   mailbox id when none was ever set (stable across renames and index
   loss). */
/* The GUID cached in the index ("mstore-guid", written by the sync), if
   it is the current mailbox's. */
bool mstore_index_ext_get(struct mail_index_view *view, uint32_t ext_id,
			  void *dst, size_t size)
{
	const void *data;
	size_t have;

	mail_index_get_header_ext(view, ext_id, &data, &have);
	if (have < size) {
		memset(dst, 0, size);
		return FALSE;
	}
	memcpy(dst, data, size);
	return TRUE;
}

void mstore_index_chg(struct mstore_mailbox *mbox,
		      struct mail_index_view *view, struct mstore_chg *chg_r)
{
	/* an index only takes more from the store, or is rebuilt from it
	   whole: a count verified later is as good as its own */
	(void)mstore_index_ext_get(view, mbox->chg_ext_id, chg_r,
				   sizeof(*chg_r));
	if (mbox->verified.epoch != 0 &&
	    (chg_r->epoch != mbox->verified.epoch ||
	     chg_r->count < mbox->verified.count))
		*chg_r = mbox->verified;
}

static bool mstore_mailbox_guid_cached(struct mstore_mailbox *mbox)
{
	struct mstore_index_guid g;

	if (mbox->box.view == NULL || mbox->mbox_id == 0 ||
	    !mstore_index_ext_get(mbox->box.view, mbox->guid_ext_id, &g,
				  sizeof(g)))
		return FALSE;
	if (g.mbox_id != mbox->mbox_id || guid_128_is_empty(g.guid))
		return FALSE;
	memcpy(mbox->guid, g.guid, sizeof(mbox->guid));
	mbox->guid_mbox_id = g.mbox_id;
	mbox->have_guid = TRUE;
	return TRUE;
}

void mstore_mailbox_guid_from(struct mstore_mailbox *mbox,
			      const struct ms_reply *rep)
{
	mbox->guid_mbox_id = rep->u.mbox_update.mbox.mbox_id;
	if (!guid_128_is_empty(rep->u.mbox_update.guid)) {
		memcpy(mbox->guid, rep->u.mbox_update.guid,
		       sizeof(mbox->guid));
	} else {
		mail_generate_guid_128_hash(
			t_strdup_printf("mstore-mailbox-%s-%llu",
					mbox->storage->store_user,
					(unsigned long long)
					rep->u.mbox_update.mbox.mbox_id),
			mbox->guid);
	}
	mbox->have_guid = TRUE;
}

int mstore_mailbox_update_store(struct mstore_mailbox *mbox,
				const struct mailbox_update *update)
{
	struct mailbox *box = &mbox->box;
	struct ms_req q = { .op = MS_OP_MBOX_UPDATE };
	struct ms_reply rep;
	const struct mail_index_header *hdr;
	struct mstore_index_header ext;
	int ret;

	/* the index mirrors the store: ask only for what differs, so that
	   a repeated migration writes nothing */
	hdr = mail_index_get_header(box->view);
	(void)mstore_index_ext_get(box->view, mbox->hdr_ext_id, &ext,
				   sizeof(ext));
	q.u.mbox_update.name = ms_pstr_c(mstore_box_store_name(box));
	if (update->uid_validity != 0 &&
	    update->uid_validity != hdr->uid_validity)
		q.u.mbox_update.uidvalidity = update->uid_validity;
	if (update->min_next_uid > hdr->next_uid)
		q.u.mbox_update.uidnext = update->min_next_uid;
	if (update->min_highest_modseq > ext.last_modseq)
		q.u.mbox_update.highestmodseq = update->min_highest_modseq;
	if (!guid_128_is_empty(update->mailbox_guid) &&
	    (!mbox->have_guid ||
	     !guid_128_equals(update->mailbox_guid, mbox->guid)))
		memcpy(q.u.mbox_update.guid, update->mailbox_guid,
		       sizeof(q.u.mbox_update.guid));
	if (q.u.mbox_update.uidvalidity == 0 && q.u.mbox_update.uidnext == 0 &&
	    q.u.mbox_update.highestmodseq == 0 &&
	    guid_128_is_empty(q.u.mbox_update.guid))
		return 0;
	ret = mstore_request_status(mbox->storage, &q, &rep);
	if (ret == MS_ESTATE) {
		/* the store's rule: a new UIDVALIDITY only while empty */
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTPOSSIBLE,
			t_strdup_printf("mstore: %.*s", (int)rep.reason.len,
					rep.reason.s));
		return -1;
	}
	if (ret < -1)
		mstore_set_store_error(mbox->storage, ret, "MBOX_UPDATE");
	if (ret < 0)
		return -1;
	mstore_mailbox_guid_from(mbox, &rep);
	/* the new UIDVALIDITY (an index reset) and UIDNEXT come in as the
	   store's, like any other of its facts */
	if (mstore_sync(mbox, MSTORE_SYNC_FULL) < 0)
		return -1;
	mstore_sync_view_refresh(box);
	return 0;
}

static int mstore_mailbox_update(struct mailbox *box,
				 const struct mailbox_update *update)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct mailbox_update local;

	if (!box->opened && mailbox_open(box) < 0)
		return -1;
	/* UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and the GUID go to the store
	   (doveadm backup keeps them); the index follows the store */
	if (mstore_mailbox_update_store(mbox, update) < 0)
		return -1;
	/* what is Dovecot's own (first recent UID, its MODSEQs, cache
	   decisions) is updated in its index */
	local = *update;
	local.uid_validity = 0;
	local.min_next_uid = 0;
	guid_128_empty(local.mailbox_guid);
	return index_storage_mailbox_update(box, &local);
}

/* Every message of an open box expunged through Dovecot's own calls
   before the store deletes the box: whatever hooks an expunge sees each
   message, as with Dovecot's own formats (index_storage_mailbox_delete_pre
   expunges first too).  lazy_expunge moves them to its folder; with the
   store's DELETE first, its copies had no source left, and the DELETE
   failed after the store had deleted the folder.  -1: nothing is
   deleted. */
static int mstore_mailbox_delete_expunge_all(struct mailbox *box)
{
	struct mailbox_transaction_context *t;
	struct mail_search_args *args;
	struct mail_search_context *ctx;
	struct mail *mail;

	if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FULL_READ) < 0)
		return -1;
	if (mail_index_view_get_messages_count(box->view) == 0)
		return 0;
	t = mailbox_transaction_begin(box, 0, __func__);
	args = mail_search_build_init();
	mail_search_build_add_all(args);
	ctx = mailbox_search_init(t, args, NULL, 0, NULL);
	mail_search_args_unref(&args);
	while (mailbox_search_next(ctx, &mail))
		mail_expunge(mail);
	if (mailbox_search_deinit(&ctx) < 0) {
		mailbox_transaction_rollback(&t);
		return -1;
	}
	if (mailbox_transaction_commit(&t) < 0)
		return -1;
	return mailbox_sync(box, 0);
}

/* DELETE's rounds of expunging what is there and deleting the mailbox
   only if nothing came meanwhile */
#define MSTORE_DELETE_ROUNDS 5

static int mstore_index_delete(struct mailbox *box)
{
	if (index_storage_mailbox_delete(box) < 0)
		return -1;
	mstore_list_index_changed(box->list);
	return 0;
}

static int mstore_mailbox_delete(struct mailbox *box)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct ms_req q = { .op = MS_OP_MBOX_DELETE };
	struct ms_reply rep;
	int ret;

	if (box->opened && box->deleting_must_be_empty &&
	    (box->inbox_user || !mbox->storage->delete_empty_known)) {
		/* (doveadm mailbox delete -e, dsync): said before the store
		   deletes anything, not after; a store of protocol version
		   9 checks it itself, in the same step as the delete
		   (MS_MBOX_DELETE_EMPTY, below) */
		if (mailbox_sync(box, MAILBOX_SYNC_FLAG_FULL_READ) < 0)
			return -1;
		if (mail_index_view_get_messages_count(box->view) > 0) {
			mail_storage_set_error(box->storage, MAIL_ERROR_EXISTS,
					       "Mailbox isn't empty");
			return -1;
		}
	}
	if (box->inbox_user) {
		/* the store keeps every user's INBOX: deleting it (what
		   doveadm backup does to a destination INBOX of another
		   UIDVALIDITY or GUID, before it creates it again) empties
		   it, as deleting it does with Dovecot's own formats: its
		   messages expunged through Dovecot first, as any folder's
		   (lazy_expunge keeps them), then whatever came meanwhile */
		struct ms_uid_range all = { 1, UINT32_MAX };
		if (box->opened && !box->deleting_must_be_empty &&
		    mstore_mailbox_delete_expunge_all(box) < 0)
			return -1;
		q.op = MS_OP_EXPUNGE;
		q.u.uids.mailbox = MS_PSTR("INBOX");
		q.u.uids.uids.n = 1;
		q.u.uids.uids.list = &all;
		if (mstore_request(mbox->storage, &q, &rep, NULL) < 0)
			return -1;
		mbox->deleted = TRUE;
		return mstore_index_delete(box);
	}
	if (!box->opened) {
		/* a \NoSelect directory: nothing of it is in the store */
		return mstore_index_delete(box);
	}
	q.u.mbox.name = ms_pstr_c(mstore_box_store_name(box));
	for (unsigned int round = 0;; round++) {
		if (!box->deleting_must_be_empty &&
		    mstore_mailbox_delete_expunge_all(box) < 0)
			return -1;
		/* the store deletes it only if nothing came meanwhile: a
		   message delivered between the expunges above and the
		   delete is expunged by the next round, through Dovecot
		   (lazy_expunge keeps it), not deleted unseen */
		if (mbox->storage->delete_empty_known)
			q.u.mbox.delete_flags = MS_MBOX_DELETE_EMPTY;
		ret = mstore_request_status(mbox->storage, &q, &rep);
		if (ret != -ENOTEMPTY)
			break;
		if (box->deleting_must_be_empty) {
			mail_storage_set_error(box->storage, MAIL_ERROR_EXISTS,
					       "Mailbox isn't empty");
			return -1;
		}
		if (round + 1 == MSTORE_DELETE_ROUNDS) {
			mail_storage_set_error(box->storage, MAIL_ERROR_INUSE,
				"Mail keeps arriving in the mailbox, "
				"try deleting it again");
			return -1;
		}
	}
	if (ret < -1 && ret != MS_ENOTFOUND) {
		mstore_set_store_error(mbox->storage, ret, "DELETE");
		return -1;
	}
	if (ret == -1)
		return -1;
	/* gone from the store: from now on the syncs of this box only
	   apply Dovecot's own requests to its index */
	mbox->deleted = TRUE;
	return mstore_index_delete(box);
}

/*
 * RENAME INBOX (RFC 3501): INBOX's messages move to a new mailbox of the
 * new name, and INBOX stays, empty; folders under INBOX stay where they
 * are.  The new mailbox is made as a CREATE makes it, then the store
 * moves every message into it in one request, with their flags and
 * keywords, under new UIDs (the copies' records first, then the sources'
 * expunge: a crash in the middle leaves copies too many, none lost).
 * INBOX's sessions see the expunges at their next sync.
 */
static int mstore_rename_inbox(struct mailbox *src, struct mailbox *dest)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(src);
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	struct ms_uid_range all = { 1, (uint32_t)-1 };
	int ret;

	if (strcmp(dest->storage->name, MSTORE_STORAGE_NAME) != 0 ||
	    strcmp(MSTORE_STORAGE(dest->storage)->store_user,
		   mbox->storage->store_user) != 0) {
		mail_storage_set_error(src->storage, MAIL_ERROR_NOTPOSSIBLE,
			"INBOX can be renamed only to a folder of its own user");
		return -1;
	}
	/* a name the store has (and this index may not): not made again */
	q.u.mbox.name = ms_pstr_c(mstore_box_store_name(dest));
	ret = mstore_request_status(mbox->storage, &q, &rep);
	if (ret == -1)
		return -1;
	if (ret == 0) {
		mail_storage_set_error(src->storage, MAIL_ERROR_EXISTS,
				       "Mailbox already exists");
		return -1;
	}
	if (ret != MS_ENOTFOUND) {
		mstore_set_store_error(mbox->storage, ret, "RENAME");
		return -1;
	}
	if (mailbox_create(dest, NULL, FALSE) < 0) {
		mail_storage_copy_error(src->storage, dest->storage);
		return -1;
	}
	q = (struct ms_req){ .op = MS_OP_MOVE };
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &all;
	q.u.uids.dst = ms_pstr_c(mstore_box_store_name(dest));
	ret = mstore_request_status(mbox->storage, &q, &rep);
	if (ret < -1)
		mstore_set_store_error(mbox->storage, ret, "RENAME");
	/* a failed move left every message in INBOX, and the new folder
	   empty: it stays, as a CREATE made it */
	return ret < 0 ? -1 : 0;
}

static int mstore_mailbox_rename(struct mailbox *src, struct mailbox *dest)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(src);
	struct ms_req q = { .op = MS_OP_MBOX_RENAME };
	struct ms_reply rep;
	int ret;

	if (src->inbox_user) {
		T_BEGIN {
			ret = mstore_rename_inbox(src, dest);
		} T_END;
		return ret;
	}
	/* IMAP's RENAME refuses this itself; doveadm and dsync come here
	   (the store would refuse it too, with a text less plain) */
	size_t src_len = strlen(src->name);
	if (src->list == dest->list &&
	    strncmp(dest->name, src->name, src_len) == 0 &&
	    dest->name[src_len] == mailbox_list_get_hierarchy_sep(src->list)) {
		mail_storage_set_error(src->storage, MAIL_ERROR_NOTPOSSIBLE,
			"Can't rename mailbox under its own child");
		return -1;
	}
	/* Dovecot's own rename below refuses a new name whose directory is
	   there with folders under it (a parent that is no folder itself:
	   B when renaming B/x to B); asked first, or the store's rename
	   would be done and Dovecot's not, and the two disagree.  The local
	   list alone: a name the store has is the store's -EEXIST below
	   (mstore_mailbox_exists would ask the store for it first) */
	enum mailbox_existence existence;
	if (index_storage_mailbox_exists(dest, FALSE, &existence) < 0) {
		mail_storage_copy_error(src->storage, dest->storage);
		return -1;
	}
	if (existence != MAILBOX_EXISTENCE_NONE) {
		mail_storage_set_error(src->storage, MAIL_ERROR_EXISTS,
				       "Target mailbox already exists");
		return -1;
	}
	q.u.mbox.name = ms_pstr_c(mstore_box_store_name(src));
	q.u.mbox.new_name = ms_pstr_c(mstore_box_store_name(dest));
	ret = mstore_request_status(mbox->storage, &q, &rep);
	if (ret < -1 && ret != MS_ENOTFOUND) {
		mstore_set_store_error(mbox->storage, ret, "RENAME");
		return -1;
	}
	if (ret == -1)
		return -1;
	if (index_storage_mailbox_rename(src, dest) < 0)
		return -1;
	mstore_list_index_changed(src->list);
	if (dest->list != src->list)
		mstore_list_index_changed(dest->list);
	return 0;
}

static int mstore_mailbox_get_metadata(struct mailbox *box,
				       enum mailbox_metadata_items items,
				       struct mailbox_metadata *metadata_r)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	/* the GUID alone, of a folder that is not open: Dovecot's list
	   index asks it of each folder it adds to its list (at the first
	   listing on a host, all of them), and an open would make and sync
	   the folder's index first, all of its messages.  The store's
	   answer below is all it needs. */
	bool guid_only = items == MAILBOX_METADATA_GUID && !box->opened &&
			 !mbox->deleted;

	if (!guid_only && index_mailbox_get_metadata(box, items, metadata_r) < 0)
		return -1;
	if ((items & MAILBOX_METADATA_GUID) != 0 && !mbox->have_guid &&
	    !mbox->deleted &&
	    (guid_only || !mstore_mailbox_guid_cached(mbox))) {
		/* the store's: an MBOX_UPDATE that changes nothing reads
		   it (set by a migration, or derived from the mailbox id) */
		struct ms_req q = { .op = MS_OP_MBOX_UPDATE };
		struct ms_reply rep;
		q.u.mbox_update.name = ms_pstr_c(mstore_box_store_name(box));
		if (mstore_request(mbox->storage, &q, &rep, NULL) < 0)
			return -1;
		mstore_mailbox_guid_from(mbox, &rep);
	}
	if ((items & MAILBOX_METADATA_GUID) != 0 && mbox->have_guid) {
		memcpy(metadata_r->guid, mbox->guid, sizeof(metadata_r->guid));
	} else if ((items & MAILBOX_METADATA_GUID) != 0) {
		/* stable across renames and index loss: from the store's
		   ids of the user and the mailbox */
		uint64_t id = mbox->mbox_id;
		if (id == 0) {
			struct mstore_index_header h;
			(void)mstore_index_ext_get(box->view, mbox->hdr_ext_id,
						   &h, sizeof(h));
			id = h.mbox_id;
		}
		mail_generate_guid_128_hash(
			t_strdup_printf("mstore-mailbox-%s-%llu",
					MSTORE_STORAGE(box->storage)->store_user,
					(unsigned long long)id),
			metadata_r->guid);
	}
	return 0;
}

static int mstore_mailbox_set_subscribed(struct mailbox *box, bool set)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct ms_req q = { .op = MS_OP_MBOX_SUBSCRIBE };
	struct ms_reply rep;
	int ret;

	q.u.mbox.name = ms_pstr_c(mstore_box_store_name(box));
	q.u.mbox.subscribe = set ? 1 : 0;
	ret = mstore_request_status(mbox->storage, &q, &rep);
	if (ret < -1) {
		mstore_set_store_error(mbox->storage, ret, "SUBSCRIBE");
		return -1;
	}
	if (ret == -1)
		return -1;
	return index_storage_set_subscribed(box, set);
}

static int mstore_store_mboxes(struct mail_namespace *ns, pool_t pool,
			       ARRAY_TYPE(mstore_store_mbox) *boxes);

static int mstore_store_mbox_cmp(const struct mstore_store_mbox *a,
				 const struct mstore_store_mbox *b)
{
	return strcmp(a->name, b->name);
}

/* The run's list of the store's mailboxes is of an earlier ioloop run:
   let it go (a user's thousands of names are not kept between
   commands). */
static void mstore_snap_age(struct mstore_storage *storage)
{
	if (timeval_cmp(&storage->snap_run, &ioloop_timeval) == 0)
		return;
	storage->snap_run = ioloop_timeval;
	storage->snap_checks = 0;
	storage->snap_valid = FALSE;
	i_zero(&storage->snap_chg);
	pool_unref(&storage->snap_pool);
}

/* Every mailbox of the user in the store, as one MBOX_LIST (or its
   pages) says now, sorted by name, as this ioloop run's list: the
   first listing's reconcile and the list index's checks share it. */
static int mstore_snap_take(struct mail_namespace *ns)
{
	struct mstore_storage *storage = MSTORE_STORAGE(ns->storage);

	mstore_snap_age(storage);
	storage->snap_valid = FALSE;
	pool_unref(&storage->snap_pool);
	storage->snap_pool = pool_alloconly_create("mstore list snapshot",
						   1024);
	p_array_init(&storage->snap, storage->snap_pool, 64);
	if (mstore_store_mboxes(ns, storage->snap_pool, &storage->snap) < 0)
		return -1;
	(void)mstore_chg_snapshot(storage, &storage->snap_chg);
	array_sort(&storage->snap, mstore_store_mbox_cmp);
	storage->snap_valid = TRUE;
	return 0;
}

/* The store's state of the mailbox named name, for the list index's
   check: from the run's list (taken by the run's reconcile, or by its
   second check), or one MBOX_STATUS.  1: found; 0: the store has no
   such mailbox; -1: the store did not say. */
static int mstore_store_state(struct mstore_mailbox *mbox, const char *name,
			      struct mstore_store_mbox *state_r,
			      struct mstore_chg *chg_r)
{
	struct mstore_storage *storage = mbox->storage;
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	int ret;

	mstore_snap_age(storage);
	if (++storage->snap_checks >= 2 && !storage->snap_valid &&
	    mstore_ns_is_ours(mbox->box.list->ns) &&
	    mstore_snap_take(mbox->box.list->ns) < 0)
		return -1;
	if (storage->snap_valid) {
		struct mstore_store_mbox key = { .name = name };
		const struct mstore_store_mbox *b =
			array_bsearch(&storage->snap, &key,
				      mstore_store_mbox_cmp);
		if (b == NULL)
			return 0;
		*state_r = *b;
		*chg_r = storage->snap_chg;
		return 1;
	}
	q.u.mbox.name = ms_pstr_c(name);
	ret = mstore_request_status(storage, &q, &rep);
	(void)mstore_chg_snapshot(storage, chg_r);
	if (ret == MS_ENOTFOUND)
		return 0;
	if (ret != 0)
		return -1;
	i_zero(state_r);
	state_r->mbox_id = rep.u.mbox.mbox_id;
	state_r->uidvalidity = rep.u.mbox.uidvalidity;
	state_r->highestmodseq = rep.u.mbox.highestmodseq;
	return 1;
}

/* Record extension "mstore-list" of Dovecot's mailbox list index: the
   store's state of a mailbox that the list index's cached STATUS
   (messages, unseen, recent, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ) was
   taken with.  All zero: not known. */
struct mstore_list_rec {
	uint64_t mbox_id;
	uint64_t modseq; /* the store's HIGHESTMODSEQ the index had seen */
	uint32_t uidvalidity;
	uint32_t unused;
};

static uint32_t mstore_list_ext_id(struct mail_index *list_index)
{
	return mail_index_ext_register(list_index, "mstore-list", 0,
				       sizeof(struct mstore_list_rec),
				       sizeof(uint64_t));
}

/* Record extension "mstore-lchg": the user's change count as of which
   the mailbox's index had every change of the store's mailbox when the
   list index took its STATUS (struct mstore_chg; epoch 0: not known). */
static uint32_t mstore_list_chg_ext_id(struct mail_index *list_index)
{
	return mail_index_ext_register(list_index, "mstore-lchg", 0,
				       sizeof(struct mstore_chg),
				       sizeof(uint64_t));
}

/*
 * Whether the list index's cached STATUS of a mailbox may be out of date
 * (1) or may answer a STATUS without opening the mailbox (0).  Dovecot's
 * own check says whether this host's index of the mailbox changed since;
 * the store may have changed behind it (a delivery, another host), which
 * one MBOX_STATUS finds out: the same mailbox, at the HIGHESTMODSEQ that
 * index had seen when the cache was written.  The cached figures are
 * Dovecot's own (its HIGHESTMODSEQ and \Recent are the index's), so a
 * STATUS answered from them says what an open would.  A quick check (a
 * LIST's \Marked or \Unmarked) does not ask the store: current only by
 * the change counts, else out of date (neither flag).  A store that
 * cannot answer: out of date, and the open reports it.
 */
static int
mstore_list_index_has_changed(struct mailbox *box,
			      struct mail_index_view *list_view,
			      uint32_t seq, bool quick, const char **reason_r)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct mstore_list_rec rec;
	struct mstore_store_mbox state;
	const void *data;
	bool expunged;
	int ret;

	ret = index_storage_list_index_has_changed(box, list_view, seq, quick,
						   reason_r);
	if (ret != 0)
		return ret;
	mail_index_lookup_ext(list_view, seq,
		mstore_list_ext_id(mail_index_view_get_index(list_view)),
		&data, &expunged);
	if (data != NULL)
		memcpy(&rec, data, sizeof(rec));
	if (data == NULL || expunged || mbox->deleted || rec.mbox_id == 0) {
		*reason_r = "mstore: no store state with the cached status";
		return 1;
	}
	/* nothing of the user changed since the record was written, or
	   since this process last found the store as it says: nothing to
	   ask */
	struct mstore_storage *storage = mbox->storage;
	const char *name = mstore_box_store_name(box);
	struct mstore_chg chg, *checked = NULL;
	char *key;
	mail_index_lookup_ext(list_view, seq,
		mstore_list_chg_ext_id(mail_index_view_get_index(list_view)),
		&data, &expunged);
	i_zero(&chg);
	if (data != NULL && !expunged)
		memcpy(&chg, data, sizeof(chg));
	if (hash_table_is_created(storage->list_checked) &&
	    !hash_table_lookup_full(storage->list_checked, name, &key,
				    &checked))
		checked = NULL;
	if ((chg.epoch != 0 || checked != NULL) &&
	    mstore_chg_refresh(storage) &&
	    (mstore_chg_current(storage, &chg, rec.mbox_id) ||
	     (checked != NULL &&
	      mstore_chg_current(storage, checked, rec.mbox_id))))
		return 0;
	if (quick) {
		*reason_r = "mstore: a quick check does not ask the store";
		return 1;
	}
	ret = mstore_store_state(mbox, name, &state, &chg);
	if (ret <= 0) {
		*reason_r = ret == 0 ? "mstore: not in the store" :
			"mstore: the store did not say";
		return 1;
	}
	if (state.mbox_id != rec.mbox_id ||
	    state.uidvalidity != rec.uidvalidity ||
	    state.highestmodseq != rec.modseq) {
		*reason_r = "mstore: the mailbox changed in the store";
		return 1;
	}
	if (chg.epoch != 0) {
		if (checked == NULL) {
			if (!hash_table_is_created(storage->list_checked)) {
				storage->list_checked_pool =
					pool_alloconly_create(
						"mstore list checks", 1024);
				hash_table_create(&storage->list_checked,
						  storage->list_checked_pool,
						  0, str_hash, strcmp);
			}
			key = p_strdup(storage->list_checked_pool, name);
			checked = p_new(storage->list_checked_pool,
					struct mstore_chg, 1);
			hash_table_insert(storage->list_checked, key, checked);
		}
		*checked = chg;
	}
	return 0;
}

/* Dovecot's list index took a mailbox's STATUS from its index: record the
   store's state that index had seen with it (mstore_list_index_has_changed). */
static void
mstore_list_index_update_sync(struct mailbox *box,
			      struct mail_index_transaction *trans,
			      uint32_t seq)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	struct mail_index_view *list_view, *view;
	struct mail_index *list_index;
	struct mstore_index_header ext;
	struct mstore_list_rec rec;
	struct mstore_chg chg;
	const void *old, *old_chg;
	uint32_t ext_id, chg_ext_id;
	bool expunged;

	index_storage_list_index_update_sync(box, trans, seq);
	list_view = mail_index_transaction_get_view(trans);
	list_index = mail_index_view_get_index(list_view);
	if (mail_index_is_in_memory(list_index))
		return;
	ext_id = mstore_list_ext_id(list_index);
	mail_index_lookup_ext(list_view, seq, ext_id, &old, &expunged);
	if (expunged)
		return;
	/* the index as the list index's status was read from it: its
	   latest state, not the mailbox's view */
	i_zero(&rec);
	i_zero(&chg);
	view = mail_index_view_open(box->index);
	uint32_t uidvalidity = mail_index_get_header(view)->uid_validity;
	if (mstore_index_ext_get(view, mbox->hdr_ext_id, &ext, sizeof(ext)) &&
	    uidvalidity != 0 && ext.mbox_id != 0 && !mbox->deleted) {
		rec.mbox_id = ext.mbox_id;
		rec.modseq = ext.last_modseq;
		rec.uidvalidity = uidvalidity;
		mstore_index_chg(mbox, view, &chg);
	}
	mail_index_view_close(&view);
	if (old == NULL || memcmp(old, &rec, sizeof(rec)) != 0)
		mail_index_update_ext(trans, seq, ext_id, &rec, NULL);
	chg_ext_id = mstore_list_chg_ext_id(list_index);
	mail_index_lookup_ext(list_view, seq, chg_ext_id, &old_chg, &expunged);
	if (old_chg == NULL || memcmp(old_chg, &chg, sizeof(chg)) != 0)
		mail_index_update_ext(trans, seq, chg_ext_id, &chg, NULL);
}

/* A standby store (the DR site) serves reads only: Dovecot then selects
   READ-ONLY and sets no \Seen on FETCH, instead of failing the write. */
static bool mstore_mailbox_is_readonly(struct mailbox *box)
{
	return index_storage_is_readonly(box) ||
	       mstore_storage_is_standby(MSTORE_STORAGE(box->storage));
}

/* Whether an index transaction queues something for the store: flag or
   keyword changes, expunge requests.  Not a cached field, a virtual size
   in the vsize record, a header: those are Dovecot's own. */
static bool mstore_itrans_has_store_changes(struct mail_index_transaction *it)
{
	const struct mail_index_transaction_keyword_update *u;

	if ((array_is_created(&it->updates) && array_count(&it->updates) > 0) ||
	    (array_is_created(&it->expunges) && array_count(&it->expunges) > 0))
		return TRUE;
	if (!array_is_created(&it->keyword_updates))
		return FALSE;
	array_foreach(&it->keyword_updates, u) {
		if ((array_is_created(&u->add_seq) &&
		     array_count(&u->add_seq) > 0) ||
		    (array_is_created(&u->remove_seq) &&
		     array_count(&u->remove_seq) > 0))
			return TRUE;
	}
	return FALSE;
}

/* Changes an IMAP STORE/EXPUNGE (or POP3 DELE, doveadm flags) made in
   the index are pushed to the store before the commit returns: the
   client hears OK only once the store has them (durable).  If the store
   cannot take them the caller gets an error; the changes stay queued in
   the index and the next sync pushes them.  A transaction that queued
   nothing for the store (only what Dovecot caches: a field, a virtual
   size) is committed to the index alone: no store request, so no error
   can come of it; IMAP COPY commits the source's transaction while it
   still holds the storage's error string of a failed copy. */
/* Expunges in an external transaction are applied to the index as
   done, not queued for the backend as an IMAP EXPUNGE's are: dsync moves
   a message within a folder to a new UID in one such transaction (its
   UID reassignment after a conflict).  They are sent to the store here,
   before the index takes them and after the transaction's copies (a
   crash in between leaves a copy too many, never none).  Before, the
   store kept those messages while the index dropped them. */
static int mstore_external_expunges(struct mailbox_transaction_context *t)
{
	struct mail_index_transaction *it = t->itrans;
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(t->box);
	const struct mail_transaction_expunge_guid *e;
	ARRAY_TYPE(seq_range) uids;
	struct ms_req q = { .op = MS_OP_EXPUNGE };
	struct ms_reply rep;
	uint32_t uid;

	t_array_init(&uids, 8);
	array_foreach(&it->expunges, e) {
		/* a sequence of the transaction's view until it commits */
		mail_index_lookup_uid(it->view, e->uid, &uid);
		if (uid != 0)
			seq_range_array_add(&uids, uid);
	}
	if (array_count(&uids) == 0)
		return 0;
	q.u.uids.mailbox = ms_pstr_c(mstore_box_store_name(t->box));
	q.u.uids.uids = mstore_uid_set(&uids);
	return mstore_request(mbox->storage, &q, &rep, NULL) < 0 ? -1 : 0;
}

static int
mstore_transaction_commit(struct mailbox_transaction_context *t,
			  struct mail_transaction_commit_changes *changes_r)
{
	struct mailbox *box = t->box;
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	bool external = (t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) != 0;
	bool push = !external && !mbox->syncing && !mbox->deleted &&
		mstore_itrans_has_store_changes(t->itrans);

	if (push && mstore_storage_is_standby(mbox->storage)) {
		/* a standby refuses every change: say so now, before the
		   index takes it (it would have to be dropped and the box
		   pulled whole again at the sync) */
		index_transaction_rollback(t);
		mstore_set_store_error(mbox->storage, -EROFS, "STORE");
		return -1;
	}
	if (!external && t->save_ctx == NULL &&
	    mail_index_is_deleted(box->index) &&
	    !mstore_itrans_has_store_changes(t->itrans)) {
		/* the folder is gone (another session deleted or renamed
		   it): the transaction holds only what Dovecot caches,
		   worth nothing now, and is dropped rather than failed.
		   The index would fail it and set the storage's error
		   ("deleted under us"), freeing the error string IMAP COPY
		   still holds from a failed copy when it commits the
		   source's transaction: the client's NO then read freed
		   memory.  The next sync tells the session the folder
		   went. */
		index_transaction_rollback(t);
		i_zero(changes_r);
		changes_r->pool = pool_alloconly_create(
			MEMPOOL_GROWING"transaction changes", 512);
		p_array_init(&changes_r->saved_uids, changes_r->pool, 32);
		return 0;
	}
	if (external && !mbox->syncing && !mbox->deleted &&
	    array_is_created(&t->itrans->expunges) &&
	    array_count(&t->itrans->expunges) > 0) {
		int ret = 0;
		if (t->save_ctx != NULL)
			ret = mstore_transaction_save_flush(t->save_ctx);
		if (ret == 0) T_BEGIN {
			ret = mstore_external_expunges(t);
		} T_END;
		if (ret < 0) {
			/* what the store copied is taken back */
			index_transaction_rollback(t);
			return -1;
		}
	}
	if (index_transaction_commit(t, changes_r) < 0)
		return -1;
	if (!push || !mail_index_sync_have_any(box->index, 0))
		return 0;
	mbox->committing = TRUE;
	int ret = mstore_sync(mbox, 0);
	mbox->committing = FALSE;
	if (ret < 0) {
		/* committed to the index, but not yet in the store */
		return -1;
	}
	return 0;
}

/* ---- the local folder list completed from the store (first listing,
   a mailbox opened that is not here) ---- */

/* Selectable local mailboxes that the store no longer has (deleted by
   another host, or by a tool) leave the local list.  TRUE if any did.
   boxes is sorted by name: a user may have thousands of folders, and
   each local one is looked up in it. */
static bool mstore_reconcile_stale(struct mail_namespace *ns,
				   ARRAY_TYPE(mstore_store_mbox) *boxes,
				   ARRAY_TYPE(const_string) *local)
{
	struct mailbox_list_iterate_context *iter;
	const struct mailbox_info *info;
	ARRAY_TYPE(const_string) stale;
	const char *const *vname;

	t_array_init(&stale, 4);
	iter = mailbox_list_iter_init(ns->list, "*", 0);
	while ((info = mailbox_list_iter_next(iter)) != NULL) {
		if ((info->flags & (MAILBOX_NOSELECT |
				    MAILBOX_NONEXISTENT)) != 0)
			continue;
		const char *name = mstore_vname_to_store(ns, info->vname);
		struct mstore_store_mbox key = { .name = name };
		if (strcmp(name, "INBOX") == 0 ||
		    array_bsearch(boxes, &key, mstore_store_mbox_cmp) != NULL) {
			name = t_strdup(name);
			array_push_back(local, &name);
			continue;
		}
		name = t_strdup(info->vname);
		array_push_back(&stale, &name);
	}
	if (mailbox_list_iter_deinit(&iter) < 0)
		return FALSE;
	array_foreach(&stale, vname) {
		const char *sname =
			mailbox_list_get_storage_name(ns->list, *vname);
		e_debug(ns->user->event, "mstore: %s is gone from the store; "
			"removing it here", *vname);
		if (ns->list->v.delete_mailbox(ns->list, sname) < 0)
			continue;
		(void)mailbox_list_delete_dir(ns->list, sname);
	}
	return array_count(&stale) > 0;
}

/* Every mailbox of the user in the store: one MBOX_LIST, or pages of
   them when one reply cannot hold the list (a store with a small
   max_frame answers MS_ETOOBIG), each after the last name of the page
   before, until an empty page.  -1 (logged) if the store could not say. */
static int mstore_store_mboxes(struct mail_namespace *ns, pool_t pool,
			       ARRAY_TYPE(mstore_store_mbox) *boxes)
{
	struct mstore_storage *storage = MSTORE_STORAGE(ns->storage);
	struct ms_req q = { .op = MS_OP_MBOX_LIST };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_mbox_info info;
	const char *after = "";
	bool paged = FALSE;
	int ret;

	for (;;) {
		if (paged) {
			q.u.list.paged = 1;
			q.u.list.after_name = ms_pstr_c(after);
			q.u.list.max = MS_CLIENT_MBOX_PAGE;
		}
		ret = mstore_request_status(storage, &q, &rep);
		if (ret == MS_ETOOBIG && !paged) {
			paged = TRUE;
			continue;
		}
		if (ret < -1)
			mstore_set_store_error(storage, ret, "MBOX_LIST");
		if (ret < 0) {
			e_error(ns->user->event, "mstore: listing the store's "
				"mailboxes failed: %s",
				mail_storage_get_last_internal_error(
					ns->storage, NULL));
			return -1;
		}
		unsigned int n = 0;
		ms_proto_iter_mboxes(&it, &rep.u.mboxes);
		while ((ret = ms_proto_next_mbox(&it, &info)) > 0) {
			if (n == 0 && paged && *after != '\0' &&
			    strlen(after) == info.name.len &&
			    memcmp(after, info.name.s, info.name.len) == 0) {
				/* a page starts after the name before: a
				   server that does not advance would be
				   asked forever */
				ret = -1;
				break;
			}
			struct mstore_store_mbox *b =
				array_append_space(boxes);
			b->name = p_strndup(pool, info.name.s, info.name.len);
			b->mbox_id = info.mbox_id;
			b->highestmodseq = info.highestmodseq;
			b->uidvalidity = info.uidvalidity;
			b->subscribed = info.subscribed != 0;
			after = b->name;
			n++;
		}
		if (ret < 0) {
			e_error(ns->user->event,
				"mstore: malformed mailbox list from the store");
			return -1;
		}
		if (!paged || n == 0)
			return 0;
	}
}

/*
 * A folder the store has and this host does not: its directory, as
 * index_storage_mailbox_create() makes it, and nothing more.  Its index
 * is made at its first open, whose sync fills it from the store (as after
 * an index loss).  Not mailbox_create(): each one had Dovecot's list
 * index walk every folder again (a stat of each), so that restoring
 * 1,000 folders made a million stats and took 5 s, 2,000 took 17 s.
 */
static int mstore_restore_folder(struct mailbox *box)
{
	const char *path;
	int ret;

	if ((ret = mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_MAILBOX,
				       &path)) <= 0)
		return ret;
	if (mailbox_mkdir(box, path, MAILBOX_LIST_PATH_TYPE_MAILBOX) < 0)
		return -1;
	if (box->list->set.iter_from_index_dir &&
	    (mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_INDEX,
				 &path) <= 0 ||
	     mailbox_mkdir(box, path, MAILBOX_LIST_PATH_TYPE_MAILBOX) < 0))
		return -1;
	return 0;
}

/*
 * After folders were restored (an index loss, or this host's first
 * login): the store's subscriptions come back too, by name, those to
 * names with no folder included (a RENAME or DELETE leaves them, in
 * Dovecot's file as in the store).  Subscriptions of folders that exist
 * came back with them already.  A store that cannot list them (before
 * protocol version 8, or more than one reply holds) leaves those out.
 */
static bool mstore_restore_subscriptions(struct mail_namespace *ns)
{
	struct mstore_storage *storage = MSTORE_STORAGE(ns->storage);
	struct ms_req q = { .op = MS_OP_MBOX_SUBS };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_pstr name;
	bool changed = FALSE;
	int ret;

	if (!storage->subs_known || ns->list->subscriptions == NULL)
		return FALSE;
	ret = mstore_request_status(storage, &q, &rep);
	if (ret < -1)
		mstore_set_store_error(storage, ret, "MBOX_SUBS");
	if (ret < 0) {
		e_warning(ns->user->event, "mstore: the store's "
			  "subscriptions could not be listed (%s): those of "
			  "names with no folder are not restored",
			  mail_storage_get_last_internal_error(ns->storage,
							       NULL));
		return FALSE;
	}
	ms_proto_iter_names(&it, &rep.u.subs);
	while ((ret = ms_proto_next_name(&it, &name)) > 0) {
		const char *sname = t_strndup(name.s, name.len);
		if (!mstore_ns_owns(ns, sname))
			continue;
		const char *vname = mstore_store_to_vname(ns, sname);
		struct mailbox_node *node =
			mailbox_tree_lookup(ns->list->subscriptions, vname);
		if (node != NULL && (node->flags & MAILBOX_SUBSCRIBED) != 0)
			continue;
		if (mailbox_list_set_subscribed(ns->list, vname, TRUE) == 0)
			changed = TRUE;
	}
	if (ret < 0)
		e_error(ns->user->event,
			"mstore: malformed subscription list from the store");
	return changed;
}

static void mstore_reconcile(struct mail_namespace *ns)
{
	struct mstore_storage *storage = MSTORE_STORAGE(ns->storage);

	if (storage->reconciled)
		return;
	storage->reconciled = TRUE;
	/* the run's list: a LIST-STATUS's checks of the folders it lists
	   then ask the store nothing more (mstore_store_state) */
	if (mstore_snap_take(ns) < 0)
		return;
	ARRAY_TYPE(mstore_store_mbox) *boxes = &storage->snap;
	const struct mstore_store_mbox *b;
	/* the local folders the store has too, from the one walk of the
	   local list: asking each folder whether it exists, between
	   creates, had Dovecot read its whole folder list again each time */
	ARRAY_TYPE(const_string) local;
	t_array_init(&local, array_count(boxes) + 1);
	bool changed = mstore_reconcile_stale(ns, boxes, &local);
	array_sort(&local, i_strcmp_p);
	/* the store's subscriptions are its user's own: a shared or public
	   namespace's go to nobody who looks into them */
	bool have_subs = ns->type == MAIL_NAMESPACE_TYPE_PRIVATE &&
		(ns->flags & NAMESPACE_FLAG_SUBSCRIPTIONS) != 0 &&
		mailbox_list_iter_subscriptions_refresh(ns->list) == 0;
	bool restored = FALSE;
	array_foreach(boxes, b) {
		if (!mstore_ns_owns(ns, b->name))
			continue; /* another namespace's (expunged/...) */
		bool here = array_bsearch(&local, &b->name, i_strcmp_p) != NULL;
		if (here && (!b->subscribed || !have_subs))
			continue; /* nothing to do for it */
		const char *vname = mstore_store_to_vname(ns, b->name);
		struct mailbox *box = mailbox_alloc(ns->list, vname, 0);

		if (!here) {
			changed = TRUE;
			restored = TRUE;
			if (mstore_restore_folder(box) < 0)
				e_error(box->event, "mstore: could not restore "
					"the mailbox from the store: %s",
					mailbox_get_last_internal_error(box,
									NULL));
		}
		if (b->subscribed && have_subs &&
		    ns->list->subscriptions != NULL &&
		    !mailbox_is_subscribed(box)) {
			changed = TRUE;
			(void)mailbox_list_set_subscribed(ns->list, vname,
							  TRUE);
		}
		mailbox_free(&box);
	}
	if (restored && have_subs && mstore_restore_subscriptions(ns))
		changed = TRUE;
	/* Dovecot's list index may have been read in this same ioloop run
	   (the walk above), and would not look at the disk again in it:
	   the listing that asked for this one must see what it changed */
	if (changed && INDEX_LIST_CONTEXT(ns->list) != NULL)
		mailbox_list_index_refresh_later(ns->list);
}

/* ---- the first listing of a session reconciles first ---- */

#define MSTORE_LIST_CONTEXT(obj) \
	MODULE_CONTEXT(obj, mstore_list_module)

struct mstore_list {
	union mailbox_list_module_context module_ctx;
	/* NOTIFY (mstore_list_notify_wait): the storage whose connection
	   is watched (its notify_io; NULL when none, or once the storage
	   went), the timer that looks after the watch, and the store's
	   folders as last seen (sorted by name) */
	struct mstore_storage *notify_storage;
	struct timeout *notify_to;
	pool_t notify_pool;
	ARRAY_TYPE(mstore_store_mbox) notify_seen;
	uint64_t notify_count;
	unsigned int notify_retry_msecs;
	bool notify_waiting;
};

static MODULE_CONTEXT_DEFINE_INIT(mstore_list_module,
				  &mailbox_list_module_register);

static struct mailbox_list_iterate_context *
mstore_list_iter_init(struct mailbox_list *list, const char *const *patterns,
		      enum mailbox_list_iter_flags flags)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);
	struct mail_namespace *ns = list->ns;

	/* mstore_reconcile() lists too: it has set reconciled by then */
	if (mstore_ns_is_ours(ns) && !MSTORE_STORAGE(ns->storage)->reconciled) {
		T_BEGIN {
			mstore_reconcile(ns);
		} T_END;
		/* mailbox_list_iter_init() read the subscriptions before it
		   came here: read them again, with what the store added */
		if ((flags & (MAILBOX_LIST_ITER_SELECT_SUBSCRIBED |
			      MAILBOX_LIST_ITER_RETURN_SUBSCRIBED)) != 0)
			(void)mailbox_list_iter_subscriptions_refresh(list);
	}
	return mlist->module_ctx.super.iter_init(list, patterns, flags);
}

/* ---- NOTIFY (RFC 5465) for folders not selected ----

   Dovecot's NOTIFY (the list index's notify_wait) watches the list
   index's log and INBOX's index log, which only a sync of a folder in
   some session writes: a delivery by mstore-lmtpd, or a change made on
   another host, touches neither.  While Dovecot waits, the storage's
   store connection is watched too; when the user's change count (the
   USER_WATCH's replies) moves, one MBOX_LIST says which folders'
   HIGHESTMODSEQ (or mailbox id) moved since the last look, and each of
   those is synced here: that writes its index and its list index
   record, and Dovecot's own watch announces it as for a change made
   by another session.  The io belongs to the storage, which removes it
   before its connection closes, for whatever reason
   (mstore_client_disconnect); a timer here puts it back. */

/* a failed look or watch is tried again after 1 s, doubling to 10 s; a
   watch that is up is looked after every 10 s */
#define MSTORE_NOTIFY_RETRY_MSECS 1000
#define MSTORE_NOTIFY_CHECK_MSECS 10000

static int mstore_store_mboxes(struct mail_namespace *ns, pool_t pool,
			       ARRAY_TYPE(mstore_store_mbox) *boxes);
static void mstore_notify_watch(struct mailbox_list *list);

/* Sync each folder of now (the store's, sorted) whose HIGHESTMODSEQ or
   id differs from the last look's, or that it did not list. */
static void mstore_notify_sync_moved(struct mailbox_list *list,
				     const ARRAY_TYPE(mstore_store_mbox) *now)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);
	const struct mstore_store_mbox *b, *old;

	array_foreach(now, b) {
		old = array_bsearch(&mlist->notify_seen, b,
				    mstore_store_mbox_cmp);
		if (old != NULL && old->highestmodseq == b->highestmodseq &&
		    old->mbox_id == b->mbox_id)
			continue;
		T_BEGIN {
			struct mailbox *box = mailbox_alloc(list,
				mstore_store_to_vname(list->ns, b->name), 0);
			/* errors are the storage's, logged there; the
			   session's own commands report them */
			(void)mailbox_sync(box, 0);
			mailbox_free(&box);
		} T_END;
	}
}

/* The store's folders now, sorted, into mlist->notify_seen; with sync,
   the folders that moved since the last look are synced first.  -1 if
   the store could not say (logged). */
static int mstore_notify_look(struct mailbox_list *list, bool sync)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);
	pool_t pool = pool_alloconly_create("mstore notify", 1024);
	ARRAY_TYPE(mstore_store_mbox) now;

	p_array_init(&now, pool, 16);
	if (mstore_store_mboxes(list->ns, pool, &now) < 0) {
		pool_unref(&pool);
		return -1;
	}
	for (unsigned int i = array_count(&now); i > 0; i--) {
		const struct mstore_store_mbox *b = array_idx(&now, i - 1);
		if (!mstore_ns_owns(list->ns, b->name))
			array_delete(&now, i - 1, 1);
	}
	array_sort(&now, mstore_store_mbox_cmp);
	if (sync)
		mstore_notify_sync_moved(list, &now);
	pool_unref(&mlist->notify_pool);
	mlist->notify_pool = pool;
	mlist->notify_seen = now;
	return 0;
}

static void mstore_notify_unwatch(struct mstore_list *mlist)
{
	timeout_remove(&mlist->notify_to);
	if (mlist->notify_storage != NULL) {
		io_remove(&mlist->notify_storage->notify_io);
		mlist->notify_storage->notify_owner = NULL;
		mlist->notify_storage = NULL;
	}
}

static void mstore_notify_retry(struct mailbox_list *list)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);

	mstore_notify_unwatch(mlist);
	if (mlist->notify_retry_msecs == 0)
		mlist->notify_retry_msecs = MSTORE_NOTIFY_RETRY_MSECS;
	mlist->notify_to = timeout_add(mlist->notify_retry_msecs,
				       mstore_notify_watch, list);
	mlist->notify_retry_msecs *= 2;
	if (mlist->notify_retry_msecs > MSTORE_NOTIFY_CHECK_MSECS)
		mlist->notify_retry_msecs = MSTORE_NOTIFY_CHECK_MSECS;
}

/* The watch is up: its io still there (the storage's connection did not
   close meanwhile), or up again. */
static void mstore_notify_check(struct mailbox_list *list)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);

	if (mlist->notify_storage == NULL ||
	    mlist->notify_storage->notify_io == NULL)
		mstore_notify_watch(list);
}

/* Watch the store connection, and look at the store's folders when
   there is reason to: none taken yet, the connection gone (the look's
   request connects again, and the user's watch comes with the
   connection), or the user's change count moved since the last look.
   Also the io's callback: it reads the watch's replies and looks again
   when the count moved, then watches on. */
static void mstore_notify_watch(struct mailbox_list *list)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);
	struct mstore_storage *storage = MSTORE_STORAGE(list->ns->storage);
	int32_t status;
	uint64_t count;
	const char *error;

	/* the look's request and the syncs use the connection: the io is
	   off meanwhile, and before the connection may close */
	mstore_notify_unwatch(mlist);
	if (!mlist->notify_waiting)
		return;
	bool seen = array_is_created(&mlist->notify_seen);
	bool looked = !seen || storage->client == NULL;
	if (looked && mstore_notify_look(list, seen) < 0) {
		mstore_notify_retry(list);
		return;
	}
	/* the look's syncs lost the connection: a moment later */
	if (storage->client == NULL) {
		mstore_notify_retry(list);
		return;
	}
	/* a store without the user's change count (before protocol
	   version 6) has nothing to watch: Dovecot's own watch stays */
	if (!storage->chg_known)
		return;
	int ret = ms_client_watch_poll(storage->client, 1, &status, &count,
				       &error);
	if (ret != 1 || status != 0) {
		/* the connection went, or the watch ended with an error:
		   the next look connects afresh; or something else's reply
		   is unread (-EBUSY: a read-ahead, which the next request
		   reads) or the watch's first reply is not in yet (0): a
		   moment later */
		if ((ret < 0 && ret != -EBUSY) || (ret == 1 && status != 0))
			mstore_client_disconnect(storage);
		mstore_notify_retry(list);
		return;
	}
	if (!looked && count != mlist->notify_count &&
	    mstore_notify_look(list, TRUE) < 0) {
		mstore_notify_retry(list);
		return;
	}
	mlist->notify_retry_msecs = 0;
	mlist->notify_count = count;
	mlist->notify_storage = storage;
	storage->notify_owner = &mlist->notify_storage;
	storage->notify_io = io_add(ms_client_fd(storage->client), IO_READ,
				    mstore_notify_watch, list);
	mlist->notify_to = timeout_add(MSTORE_NOTIFY_CHECK_MSECS,
				       mstore_notify_check, list);
}

/* The user's own folders in mstore: the session's store connection
   watches that user (a shared or public namespace's storage speaks as
   another, and connects only when asked). */
static bool mstore_list_notifies(struct mailbox_list *list)
{
	struct mail_namespace *ns = list->ns;

	return ns != NULL && ns->storage != NULL && ns->alias_for == NULL &&
	       ns->type == MAIL_NAMESPACE_TYPE_PRIVATE &&
	       strcmp(ns->storage->name, MSTORE_STORAGE_NAME) == 0;
}

static void mstore_list_notify_wait(struct mailbox_list_notify *notify,
				    void (*callback)(void *context),
				    void *context)
{
	struct mailbox_list *list = notify->list;
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);

	mlist->module_ctx.super.notify_wait(notify, callback, context);
	if (!mstore_list_notifies(list))
		return;
	if (callback == NULL) {
		mlist->notify_waiting = FALSE;
		mstore_notify_unwatch(mlist);
		return;
	}
	if (mlist->notify_waiting)
		return;
	mlist->notify_waiting = TRUE;
	mstore_notify_watch(list);
}

static void mstore_list_notify_deinit(struct mailbox_list_notify *notify)
{
	struct mailbox_list *list = notify->list;
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);

	mlist->notify_waiting = FALSE;
	mstore_notify_unwatch(mlist);
	pool_unref(&mlist->notify_pool);
	i_zero(&mlist->notify_seen);
	mlist->module_ctx.super.notify_deinit(notify);
}

static void mstore_list_deinit(struct mailbox_list *list)
{
	struct mstore_list *mlist = MSTORE_LIST_CONTEXT(list);

	mstore_notify_unwatch(mlist);
	pool_unref(&mlist->notify_pool);
	mlist->module_ctx.super.deinit(list);
}

/* Plugin hooks run before Dovecot's own (the list index's), and the first
   to wrap a vtable is the outermost: a listing comes here first, and the
   list index's refresh, below, never does.  The list index's notify
   functions are set into super after this, so notify_wait below calls
   them. */
static void mstore_mailbox_list_created(struct mailbox_list *list)
{
	struct mailbox_list_vfuncs *v = list->vlast;
	struct mstore_list *mlist;

	mlist = p_new(list->pool, struct mstore_list, 1);
	mlist->module_ctx.super = *v;
	list->vlast = &mlist->module_ctx.super;
	v->iter_init = mstore_list_iter_init;
	v->notify_wait = mstore_list_notify_wait;
	v->notify_deinit = mstore_list_notify_deinit;
	v->deinit = mstore_list_deinit;
	MODULE_CONTEXT_SET(list, mstore_list_module, mlist);
}

struct mail_storage_hooks mstore_storage_hooks = {
	.mail_user_created = mstore_user_created,
	.mailbox_list_created = mstore_mailbox_list_created,
};

struct mail_storage mstore_storage = {
	.name = MSTORE_STORAGE_NAME,
	.class_flags = MAIL_STORAGE_CLASS_FLAG_UNIQUE_ROOT |
		       MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUIDS |
		       MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_SAVE_GUIDS |
		       MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUID128,
	.event_category = &event_category_mstore,
	.v = {
		.get_setting_parser_info = NULL,
		.alloc = mstore_storage_alloc,
		.create = mstore_storage_create,
		.destroy = mstore_storage_destroy,
		.add_list = NULL,
		.get_list_settings = mstore_storage_get_list_settings,
		.autodetect = NULL,
		.mailbox_alloc = mstore_mailbox_alloc,
		.purge = NULL,
		.list_index_rebuild = NULL,
	},
};

struct mailbox mstore_mailbox = {
	.v = {
		.is_readonly = mstore_mailbox_is_readonly,
		.enable = index_storage_mailbox_enable,
		.exists = mstore_mailbox_exists,
		.open = mstore_mailbox_open,
		.close = mstore_mailbox_close,
		.free = index_storage_mailbox_free,
		.create_box = mstore_mailbox_create,
		.update_box = mstore_mailbox_update,
		.delete_box = mstore_mailbox_delete,
		.rename_box = mstore_mailbox_rename,
		.get_status = index_storage_get_status,
		.get_metadata = mstore_mailbox_get_metadata,
		.set_subscribed = mstore_mailbox_set_subscribed,
		.attribute_set = index_storage_attribute_set,
		.attribute_get = index_storage_attribute_get,
		.attribute_iter_init = index_storage_attribute_iter_init,
		.attribute_iter_next = index_storage_attribute_iter_next,
		.attribute_iter_deinit = index_storage_attribute_iter_deinit,
		.list_index_has_changed = mstore_list_index_has_changed,
		.list_index_update_sync = mstore_list_index_update_sync,
		.sync_init = mstore_mailbox_sync_init,
		.sync_next = index_mailbox_sync_next,
		.sync_deinit = index_mailbox_sync_deinit,
		.sync_notify = NULL,
		.notify_changes = mstore_notify_changes,
		.transaction_begin = index_transaction_begin,
		.transaction_commit = mstore_transaction_commit,
		.transaction_rollback = index_transaction_rollback,
		.get_private_flags_mask = NULL,
		.mail_alloc = mstore_mail_alloc,
		.search_init = index_storage_search_init,
		.search_deinit = index_storage_search_deinit,
		.search_next_nonblock = index_storage_search_next_nonblock,
		.search_next_update_seq = index_storage_search_next_update_seq,
		.search_next_match_mail = index_storage_search_next_match_mail,
		.save_alloc = mstore_save_alloc,
		.save_begin = mstore_save_begin,
		.save_continue = mstore_save_continue,
		.save_finish = mstore_save_finish,
		.save_cancel = mstore_save_cancel,
		.copy = mstore_copy,
		.transaction_save_commit_pre =
			mstore_transaction_save_commit_pre,
		.transaction_save_commit_post =
			mstore_transaction_save_commit_post,
		.transaction_save_rollback = mstore_transaction_save_rollback,
		.is_inconsistent = index_storage_is_inconsistent,
	},
};
