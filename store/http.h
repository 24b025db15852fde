/*
 * http.h - a small, strict HTTP/1.1 request parser and response writer
 * for the system API (sysapi.c, docs/http-api.md).  Pure: bytes and
 * limits in, a request or an HTTP status out; no I/O, so it is fuzzed
 * (tests/fuzz/fuzz_http.c) and table-tested (tests/unit/test_http.c).
 *
 * What is accepted (RFC 9112, narrowed):
 *   request-line  METHOD SP origin-form SP "HTTP/1." ("0" | "1") CRLF,
 *                 METHOD a token of at most 16 bytes, the target "/"
 *                 then visible ASCII (0x21-0x7e), at most 2048 bytes
 *                 (else 414), a longer method 501;
 *   header lines  token ":" OWS value OWS CRLF; the value visible ASCII,
 *                 SP and HTAB; no obs-fold, no blank before the colon;
 *   end           an empty line (CRLF).
 * Lines end in CRLF only: a bare CR or LF, a NUL or any other control
 * byte in the head is 400.  Limits: the head (request line, headers and
 * the empty line) at most limits.max_head bytes (else 431), at most
 * MS_HTTP_MAX_HEADERS lines (431), a body of at most limits.max_body
 * bytes given by Content-Length (else 413).  Transfer-Encoding:
 * chunked is refused with 411 (send Content-Length), any other coding
 * with 501.  A POST or PUT without Content-Length is 411.  HTTP/1.1
 * needs exactly one Host (400).  Content-Length, Host, Authorization,
 * Connection and Content-Type may each appear once (400).  Another
 * version than 1.0 and 1.1 is 505.
 *
 * Borrowing: every pointer in struct ms_http_req points into the bytes
 * given to ms_http_parse; valid while they are.
 */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <stdbool.h>

#include "buf.h"

#define MS_HTTP_MAX_HEAD_DEFAULT ((size_t)16 << 10)
#define MS_HTTP_MAX_BODY_DEFAULT ((size_t)64 << 10)
#define MS_HTTP_MAX_HEADERS 64
#define MS_HTTP_MAX_METHOD 16
#define MS_HTTP_MAX_TARGET 2048

struct ms_http_limits {
	size_t max_head;	/* 0: MS_HTTP_MAX_HEAD_DEFAULT */
	size_t max_body;	/* 0: MS_HTTP_MAX_BODY_DEFAULT */
};

struct ms_http_req {
	const char *method;	/* a token, method_len bytes, no NUL */
	size_t method_len;
	const char *path;	/* target up to '?' (starts with '/') */
	size_t path_len;
	const char *query;	/* after '?', or NULL */
	size_t query_len;
	int minor;		/* HTTP/1.minor: 0 or 1 */
	bool keep_alive;	/* the client may send another request */
	const char *auth;	/* the Authorization value, or NULL */
	size_t auth_len;
	const char *content_type; /* or NULL */
	size_t content_type_len;
	const uint8_t *body;	/* body_len bytes (Content-Length) */
	size_t body_len;
	size_t total;		/* bytes of the whole request */
};

/*
 * Parse the request at the start of p[0..len) (more bytes may follow:
 * the next request).  Returns:
 *   0          a whole request: *req_r filled;
 *   MS_ETRUNC  more bytes are needed (none of the limits is passed yet);
 *   MS_ECORRUPT the request is refused: *status_r is the HTTP status to
 *              answer (400, 411, 413, 414, 431, 501, 505) and *error_r says
 *              why; the connection is then to be closed, since where
 *              the next request starts is not known.
 * *req_r is untouched unless 0 is returned.
 */
int ms_http_parse(const uint8_t *p, size_t len,
		  const struct ms_http_limits *lim, struct ms_http_req *req_r,
		  int *status_r, const char **error_r);

/* true if the method is m (methods are case-sensitive). */
bool ms_http_method_is(const struct ms_http_req *r, const char *m);

/*
 * Percent-decode s[0..len) into out (out_size bytes, NUL-terminated):
 * "%XX" with hex digits; refused (-EINVAL): a bad escape, a control
 * byte (%00 included), a raw '/' (it ends a path segment; %2F is a '/'
 * in the name), or a result that does not fit.  Returns the decoded
 * length.
 */
int ms_http_pct_decode(const char *s, size_t len, char *out,
		       size_t out_size);

/* The reason phrase of a status ("Not Found"), "Unknown" if none. */
const char *ms_http_reason(int status);

/*
 * Append a whole response: status line, Content-Type (if not NULL),
 * Content-Length, Connection (close or keep-alive), the extra header
 * lines (each ending in CRLF; may be NULL), then the body.
 */
int ms_http_response(struct ms_buf *out, int status, const char *ctype,
		     const char *extra, bool keep_alive, const void *body,
		     size_t body_len);

#endif
