/*
 * mstore-mail.c - mails of an mstore mailbox.
 *
 * Sizes, dates and the GUID come from the "mstore-rec" record that the
 * sync wrote from the store's FETCH_META, so FETCH RFC822.SIZE, POP3
 * LIST and doveadm fetch never read a body.  The body is read from the
 * store (FETCH_BODY, in chunks) into a buffer the mail owns, as the
 * bytes were stored: physical size = what the stream gives; the virtual
 * size (bare LFs counted as CRLF) is the store's, computed by the same
 * rule as Dovecot's.  With mail_prefetch_count, mail_prefetch() sends
 * the FETCH_BODY ahead and the stream takes its reply (mstore-client.c).
 */
#include "lib.h"
#include "buffer.h"
#include "istream.h"
#include "ioloop.h"
#include "str.h"
#include "guid.h"
#include "message-header-parser.h"
#include "message-part-data.h"
#include "imap-envelope.h"
#include "mail-cache.h"
#include "index-mail.h"
#include "mstore-storage.h"

bool mstore_mail_get_rec(struct mail *mail, struct mstore_mail_rec *rec_r)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(mail->box);
	const void *data;
	bool expunged;

	if (mail->saving || mbox->rec_ext_id == 0)
		return FALSE;
	mail_index_lookup_ext(mail->transaction->view, mail->seq,
			      mbox->rec_ext_id, &data, &expunged);
	if (data == NULL)
		return FALSE;
	memcpy(rec_r, data, sizeof(*rec_r));
	/* a record never written is all zeros; a real one has a GUID */
	return !guid_128_is_empty(rec_r->guid);
}

static int mstore_mail_no_rec(struct mail *mail)
{
	mail_set_critical(mail, "mstore: no store metadata for uid %u in "
			  "the index", mail->uid);
	return -1;
}

/* Sizes and dates: what the mail has already, else the record, and
   Dovecot's own lookups only for a mail without one (being saved).  Not
   Dovecot's first: they look in dovecot.index.cache, which a mailbox
   has only from its first index-changing sync on (mstore-sync.c), and
   until then each lookup would try to open it again. */

/* The record's sizes and dates into what the mail has, in one lookup;
   FALSE when it has no record. */
static bool mstore_mail_fill(struct mail *_mail)
{
	struct index_mail *mail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &mail->data;
	struct mstore_mail_rec rec;

	if (!mstore_mail_get_rec(_mail, &rec))
		return FALSE;
	if (data->physical_size == UOFF_T_MAX)
		data->physical_size = rec.physical_size;
	if (data->virtual_size == UOFF_T_MAX)
		data->virtual_size = rec.virtual_size;
	if (data->received_date == (time_t)-1)
		data->received_date = (time_t)rec.received;
	if (data->save_date == (time_t)-1)
		data->save_date = (time_t)rec.saved;
	return TRUE;
}

static int mstore_mail_get_received_date(struct mail *_mail, time_t *date_r)
{
	struct index_mail *mail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &mail->data;

	if (data->received_date != (time_t)-1 || mstore_mail_fill(_mail)) {
		*date_r = data->received_date;
		return 0;
	}
	if (index_mail_get_received_date(_mail, date_r) == 0)
		return 0;
	return mstore_mail_no_rec(_mail);
}

static int mstore_mail_get_save_date(struct mail *_mail, time_t *date_r)
{
	struct index_mail *mail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &mail->data;
	int ret;

	if (data->save_date != (time_t)-1 || mstore_mail_fill(_mail)) {
		*date_r = data->save_date;
		return 1;
	}
	if ((ret = index_mail_get_save_date(_mail, date_r)) > 0)
		return ret;
	if (_mail->saving) {
		*date_r = ioloop_time;
		return 1;
	}
	return mstore_mail_no_rec(_mail);
}

static int mstore_mail_get_physical_size(struct mail *_mail, uoff_t *size_r)
{
	struct index_mail *mail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &mail->data;

	if (data->physical_size != UOFF_T_MAX || mstore_mail_fill(_mail)) {
		*size_r = data->physical_size;
		return 0;
	}
	if (index_mail_get_physical_size(_mail, size_r) == 0)
		return 0;
	return mstore_mail_no_rec(_mail);
}

static int mstore_mail_get_virtual_size(struct mail *_mail, uoff_t *size_r)
{
	struct index_mail *mail = INDEX_MAIL(_mail);

	if (mail->data.virtual_size != UOFF_T_MAX || mstore_mail_fill(_mail)) {
		*size_r = mail->data.virtual_size;
		return 0;
	}
	if (index_mail_get_cached_virtual_size(mail, size_r))
		return 0;
	if (_mail->saving)
		return index_mail_get_virtual_size(_mail, size_r);
	return mstore_mail_no_rec(_mail);
}

/*
 * FETCH ENVELOPE, built as Dovecot builds it (index-mail-headers.c:
 * the cached "imap.envelope" if the cache has it, else the envelope's
 * header fields, from the cache or the message, parsed), with one
 * difference: the lookup of those header fields is made once per
 * mailbox (mbox->envelope_headers) instead of once per message.
 * Dovecot makes it for every message, and making it (each field
 * registered with the cache by name, the list sorted) cost a fifth of
 * the imap process's instructions in a FETCH 1:* (FLAGS ENVELOPE) over
 * cached headers (callgrind; docs/dovecot-plugin.md).  The lookup holds
 * the cache's field numbers, which live as long as the mailbox's index.
 */
#define MSTORE_ENVELOPE_HDR_FLAGS                       \
	(MESSAGE_HEADER_PARSER_FLAG_SKIP_INITIAL_LWSP | \
	 MESSAGE_HEADER_PARSER_FLAG_DROP_CR)

static void mstore_mail_envelope_header(struct message_header_line *hdr,
					struct index_mail *mail)
{
	struct mail *_mail = &mail->mail.mail;
	unsigned int field =
		mail->ibox->cache_fields[MAIL_CACHE_IMAP_ENVELOPE].idx;

	message_part_envelope_parse_from_header(
		mail->mail.data_pool, &mail->data.envelope_data,
		&mail->data.part_data_limits, hdr);
	if (hdr != NULL)
		return;
	string_t *str = str_new(mail->mail.data_pool, 256);
	imap_envelope_write(mail->data.envelope_data, str);
	mail->data.envelope = str_c(str);
	if (mail_cache_field_can_add(_mail->transaction->cache_trans,
				     _mail->seq, field))
		index_mail_cache_add_idx(mail, field, str_data(str),
					 str_len(str));
}

static int mstore_mail_get_envelope(struct mail *_mail)
{
	struct index_mail *mail = INDEX_MAIL(_mail);
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(_mail->box);
	unsigned int field =
		mail->ibox->cache_fields[MAIL_CACHE_IMAP_ENVELOPE].idx;
	struct istream *input;
	string_t *str;

	str = str_new(mail->mail.data_pool, 256);
	if (index_mail_cache_lookup_field(mail, str, field) > 0) {
		mail->data.envelope = str_c(str);
		return 0;
	}
	str_free(&str);

	uoff_t old_offset =
		mail->data.stream == NULL ? 0 : mail->data.stream->v_offset;
	/* the parse below builds it: not also Dovecot's parse of the
	   message's header, if the fields are not all cached */
	mail->data.save_envelope = FALSE;
	if (mbox->envelope_headers == NULL)
		mbox->envelope_headers = mailbox_header_lookup_init(
			_mail->box, message_part_envelope_headers);
	if (mail_get_header_stream(_mail, mbox->envelope_headers, &input) < 0)
		return -1;
	message_parse_header(input, NULL, MSTORE_ENVELOPE_HDR_FLAGS,
			     mstore_mail_envelope_header, mail);
	if (input->stream_errno != 0) {
		index_mail_stream_log_failure_for(mail, input);
		return -1;
	}
	i_assert(mail->data.envelope != NULL);
	if (mail->data.stream != NULL)
		i_stream_seek(mail->data.stream, old_offset);
	return 0;
}

static int mstore_mail_get_special(struct mail *_mail,
				   enum mail_fetch_field field,
				   const char **value_r)
{
	struct mstore_mail_rec rec;

	switch (field) {
	case MAIL_FETCH_IMAP_ENVELOPE: {
		struct index_mail *imail = INDEX_MAIL(_mail);
		if (imail->data.envelope == NULL &&
		    mstore_mail_get_envelope(_mail) < 0)
			return -1;
		*value_r = imail->data.envelope;
		return 0;
	}
	case MAIL_FETCH_GUID: {
		if (!mstore_mail_get_rec(_mail, &rec))
			break;
		struct index_mail *imail = INDEX_MAIL(_mail);
		*value_r = p_strdup(imail->mail.data_pool,
				    guid_128_to_string(rec.guid));
		return 0;
	}
	case MAIL_FETCH_UIDL_BACKEND:
	case MAIL_FETCH_POP3_ORDER:
		*value_r = "";
		return 0;
	default:
		break;
	}
	return index_mail_get_special(_mail, field, value_r);
}

static void mstore_mail_body_free(buffer_t *body)
{
	buffer_free(&body);
}

static int mstore_mail_get_stream(struct mail *_mail, bool get_body ATTR_UNUSED,
				  struct message_size *hdr_size,
				  struct message_size *body_size,
				  struct istream **stream_r)
{
	struct mstore_mail *mmail = MSTORE_MAIL(_mail);
	struct index_mail *mail = &mmail->imail;
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(_mail->box);

	if (mail->data.stream == NULL) {
		buffer_t *body;
		struct istream *input;
		uint64_t total;
		int ret;

		if (!mail_stream_access_start(_mail))
			return -1;
		/* a read-ahead's reply, if there is one (else body is
		   NULL and the whole body is asked for now) */
		if (mmail->prefetch_id != 0)
			mstore_prefetch_wait(mbox->storage, mmail);
		body = mstore_prefetch_take(mbox->storage, mmail, &total);
		if (body == NULL)
			body = buffer_create_dynamic(default_pool, 8192);
		ret = 0;
		if (total == 0 || body->used < total) T_BEGIN {
			ret = mmail->copy_src != NULL ?
				mstore_fetch_body(mbox->storage, _mail,
						  mmail->copy_src,
						  mmail->copy_src_uid, body,
						  total) :
				mstore_fetch_body(mbox->storage, _mail,
					mstore_box_store_name(_mail->box),
					_mail->uid, body, total);
		} T_END;
		if (ret < 0) {
			buffer_free(&body);
			return -1;
		}
		input = i_stream_create_from_data(body->data, body->used);
		i_stream_add_destroy_callback(input, mstore_mail_body_free,
					      body);
		i_stream_set_name(input, t_strdup_printf("mstore uid=%u",
							 _mail->uid));
		mail->data.stream = input;
		index_mail_set_read_buffer_size(_mail, input);
		if (mail->mail.v.istream_opened != NULL) {
			if (mail->mail.v.istream_opened(_mail,
							&mail->data.stream) < 0) {
				index_mail_close_streams(mail);
				return -1;
			}
		}
		/* the whole message is in memory: say whether it has NULs,
		   which Dovecot knows otherwise only from a parse.  Not
		   knowing, IMAP's FETCH BODY[] copies every literal through a
		   stream that replaces NULs, 8 KiB at a time (a write to the
		   client each).  Only for the bytes as stored: a plugin that
		   changed the stream (decryption, decompression) serves
		   others. */
		if (mail->data.stream == input && !_mail->has_nuls &&
		    !_mail->has_no_nuls) {
			bool nuls = memchr(body->data, '\0', body->used) != NULL;
			_mail->has_nuls = nuls;
			_mail->has_no_nuls = !nuls;
		}
	}
	return index_mail_init_stream(mail, hdr_size, body_size, stream_r);
}

static bool mstore_mail_prefetch(struct mail *_mail)
{
	struct mstore_mail *mmail = MSTORE_MAIL(_mail);
	struct index_mail *mail = &mmail->imail;
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(_mail->box);
	struct mstore_mail_rec rec;

	/* TRUE: nothing to wait for, the mail may be read at once */
	if (mmail->prefetch_id != 0)
		return FALSE;
	if (mail->data.stream != NULL || mmail->prefetched != NULL)
		return TRUE;
	/* only when the mail will be opened (not when the cache or the
	   record answers everything wanted) */
	if ((mail->data.access_part &
	     (READ_HDR | READ_BODY | PARSE_HDR | PARSE_BODY)) == 0)
		return TRUE;
	if (_mail->expunged || _mail->saving ||
	    !mstore_mail_get_rec(_mail, &rec))
		return TRUE;
	return !mstore_prefetch_body(mbox->storage, mmail,
				     mstore_box_store_name(_mail->box),
				     _mail->uid, rec.physical_size);
}

static void mstore_mail_close(struct mail *_mail)
{
	struct mstore_mail *mmail = MSTORE_MAIL(_mail);

	/* closed or about to be set to another message (also at free) */
	mstore_prefetch_release(MSTORE_MAILBOX(_mail->box)->storage, mmail);
	/* Dovecot caches sizes and dates as a mail closes, if its cache
	   file's decisions say so; here they are in the record, and
	   deciding would look for that file, which a mailbox does not have
	   before its first index-changing sync (an open() that fails, per
	   transaction), and would cache them twice.  A mail being saved
	   caches nothing: its index record goes at commit. */
	enum mail_fetch_field nocache = MAIL_FETCH_RECEIVED_DATE |
		MAIL_FETCH_SAVE_DATE | MAIL_FETCH_VIRTUAL_SIZE |
		MAIL_FETCH_PHYSICAL_SIZE;
	if (_mail->saving)
		nocache |= MAIL_FETCH_DATE | MAIL_FETCH_BODY_SNIPPET;
	/* (a mail not set yet keeps its data: nothing to close) */
	if (_mail->seq != 0)
		mmail->imail.data.dont_cache_fetch_fields |= nocache;
	i_free(mmail->copy_src);
	mmail->copy_src_uid = 0;
	index_mail_close(_mail);
}

struct mail *mstore_mail_alloc(struct mailbox_transaction_context *t,
			       enum mail_fetch_field wanted_fields,
			       struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct mstore_mail *mail;
	pool_t pool;

	pool = pool_alloconly_create("mail", 2048);
	mail = p_new(pool, struct mstore_mail, 1);
	index_mail_init(&mail->imail, t, wanted_fields, wanted_headers, pool,
			NULL);
	return &mail->imail.mail.mail;
}

struct mail_vfuncs mstore_mail_vfuncs = {
	.close = mstore_mail_close,
	.free = index_mail_free,
	.set_seq = index_mail_set_seq,
	.set_uid = index_mail_set_uid,
	.set_uid_cache_updates = index_mail_set_uid_cache_updates,
	.prefetch = mstore_mail_prefetch,
	.precache = index_mail_precache,
	.add_temp_wanted_fields = index_mail_add_temp_wanted_fields,

	.get_flags = index_mail_get_flags,
	.get_keywords = index_mail_get_keywords,
	.get_keyword_indexes = index_mail_get_keyword_indexes,
	.get_modseq = index_mail_get_modseq,
	.get_pvt_modseq = index_mail_get_pvt_modseq,
	.get_parts = index_mail_get_parts,
	.get_date = index_mail_get_date,
	.get_received_date = mstore_mail_get_received_date,
	.get_save_date = mstore_mail_get_save_date,
	.get_virtual_size = mstore_mail_get_virtual_size,
	.get_physical_size = mstore_mail_get_physical_size,
	.get_first_header = index_mail_get_first_header,
	.get_headers = index_mail_get_headers,
	.get_header_stream = index_mail_get_header_stream,
	.get_stream = mstore_mail_get_stream,
	.get_binary_stream = index_mail_get_binary_stream,
	.get_special = mstore_mail_get_special,
	.get_backend_mail = index_mail_get_backend_mail,
	.update_flags = index_mail_update_flags,
	.update_keywords = index_mail_update_keywords,
	.update_modseq = index_mail_update_modseq,
	.update_pvt_modseq = index_mail_update_pvt_modseq,
	.update_pop3_uidl = NULL,
	.expunge = index_mail_expunge,
	.set_cache_corrupted = index_mail_set_cache_corrupted,
	.istream_opened = index_mail_opened,
};
