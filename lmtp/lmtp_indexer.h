/*
 * lmtp_indexer.h - tells Dovecot's indexer which folders got mail, so
 * that Dovecot's full-text search indexes what mstore-lmtpd delivered as
 * it arrives, as `fts_autoindex` does for mail that Dovecot saves itself.
 * Off unless [lmtp] dovecot_indexer names the socket (docs/lmtp.md,
 * "Full-text search").
 *
 * Best effort, and never in a delivery's way: a delivered (user, folder)
 * pair is noted in memory, each pair once however many messages it got,
 * and the pairs go out at most every LMTP_INDEXER_EVERY_MS, all on one
 * new connection to the socket, in Dovecot's indexer protocol:
 *
 *   VERSION<TAB>indexer<TAB>1<TAB>0<LF>
 *   APPEND<TAB>0<TAB><user><TAB><folder><LF>     (one per pair)
 *
 * with Dovecot's tab escaping (\001 -> \001 1, TAB -> \001 t, CR -> \001 r,
 * LF -> \001 n).  Tag 0 asks for no progress reports; the indexer's
 * "0<TAB>OK" lines are not read and the connection is closed once
 * written (the indexer reads what was queued before it sees the end).
 * The folder is Dovecot's name for the store's mailbox: the namespace
 * prefix, then the store's name with '/' and the namespace separator
 * swapped, as the plugin names it; INBOX stays INBOX.
 *
 * Bounds: at most LMTP_INDEXER_MAX pairs wait (more are dropped, counted
 * and logged: the next search catches up, as without this); one
 * connection writes at most LMTP_INDEXER_WRITE bytes of whole lines
 * (a line is at most about 2.9 KiB: user 255 and mailbox 1024 bytes,
 * escaped, and the prefix), with one non-blocking send; what does not
 * fit, or was not taken by a short send, waits for the next turn.  A
 * socket that cannot be reached (Dovecot down, no such file) keeps the
 * pairs and tries again after 1 s, doubling to 30 s, with one warning
 * per failure streak.
 */
#ifndef LMTP_INDEXER_H
#define LMTP_INDEXER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define LMTP_INDEXER_EVERY_MS 100
#define LMTP_INDEXER_MAX 10000
#define LMTP_INDEXER_WRITE ((size_t)64 << 10)
#define LMTP_INDEXER_RETRY_MS 1000
#define LMTP_INDEXER_RETRY_MAX_MS 30000

struct lmtp_indexer;

struct lmtp_indexer_stats {
	uint64_t noted;    /* pairs noted (a pair already waiting: not) */
	uint64_t sent;     /* pairs written to the socket */
	uint64_t dropped;  /* pairs dropped: LMTP_INDEXER_MAX were waiting */
	uint64_t failures; /* connections or writes that failed */
};

/* path: the indexer's socket; sep: the namespace separator; prefix: the
   namespace prefix ("" for none).  Copies what it needs. */
struct lmtp_indexer *lmtp_indexer_new(const char *path, char sep,
				      const char *prefix);
void lmtp_indexer_free(struct lmtp_indexer **ix);
/* A message went to user's store mailbox (NULL or "INBOX": INBOX). */
void lmtp_indexer_note(struct lmtp_indexer *ix, const char *user,
		       const char *mailbox);
/* Send what is due.  Returns the time (lmtp_now_ms() clock) to be
   called again at the latest, or 0 when nothing waits. */
uint64_t lmtp_indexer_tick(struct lmtp_indexer *ix, uint64_t now);
size_t lmtp_indexer_waiting(const struct lmtp_indexer *ix);
void lmtp_indexer_stats(const struct lmtp_indexer *ix,
			struct lmtp_indexer_stats *st);

/* Pure, for tests: Dovecot's name of a store mailbox (malloc'ed). */
char *lmtp_indexer_vname(char sep, const char *prefix, const char *mailbox);
/* Pure, for tests: one APPEND line, tab-escaped, appended to b. */
int lmtp_indexer_line(struct ms_buf *b, const char *user, const char *vname);
/* Pure, for tests: of the handshake and lines in d[0..len), the number
   of lines that end within the first w bytes (a short send). */
size_t lmtp_indexer_lines_written(const uint8_t *d, size_t len, size_t w);

#endif
