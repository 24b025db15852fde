/*
 * http.c - the system API's HTTP/1.1 request parser and response
 * writer; see http.h for what is accepted.  Pure: no I/O.
 *
 * The parser is stateless: each call starts again at the first byte, so
 * a caller that gets MS_ETRUNC calls again with more bytes.  The head is
 * scanned byte by byte for forbidden bytes and line ends as far as it is
 * there, so a NUL, a bare CR or LF, or an over-long head is refused as
 * soon as it arrives, without waiting for the end of the head.
 */
#include <errno.h>
#include <stdio.h>
#include <strings.h>

#include "cfg.h"
#include "http.h"

static bool is_tchar(uint8_t c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_vchar(uint8_t c)
{
	return c >= 0x21 && c <= 0x7e;
}

static int refuse(int status, const char *why, int *status_r,
		  const char **error_r)
{
	*status_r = status;
	*error_r = why;
	return MS_ECORRUPT;
}

static bool name_is(const uint8_t *n, size_t len, const char *want)
{
	return len == strlen(want) && strncasecmp((const char *)n, want, len) == 0;
}

/*
 * Scan the head: every byte is visible ASCII, SP, HTAB, or a CR that an
 * LF follows; returns the head's length (the empty line included) in
 * *head_r, or MS_ETRUNC, or a refusal.
 */
static int scan_head(const uint8_t *p, size_t len, size_t max_head,
		     size_t *head_r, int *status_r, const char **error_r)
{
	size_t n = len < max_head ? len : max_head;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (c == '\r') {
			if (i + 1 == len) {
				if (i + 2 > max_head)
					break; /* a head's end, too late */
				return MS_ETRUNC;
			}
			if (p[i + 1] != '\n')
				return refuse(400, "a CR without LF in the head",
					      status_r, error_r);
			/* CRLF CRLF: the end of the head */
			if (i >= 2 && p[i - 1] == '\n' && p[i - 2] == '\r') {
				if (i + 2 > max_head)
					break; /* its LF is one too many */
				*head_r = i + 2;
				return 0;
			}
			if (i == 0)
				return refuse(400, "an empty request line",
					      status_r, error_r);
			i++; /* the LF */
			continue;
		}
		if (c == '\n')
			return refuse(400, "a line ends in LF without CR",
				      status_r, error_r);
		if (c == '\0')
			return refuse(400, "a NUL byte in the head", status_r,
				      error_r);
		if (c != '\t' && (c < 0x20 || c > 0x7e))
			return refuse(400, "a control or non-ASCII byte in "
					   "the head",
				      status_r, error_r);
	}
	if (len >= max_head)
		return refuse(431, "request head over its limit", status_r,
			      error_r);
	return MS_ETRUNC;
}

/* The request line p[0..len) (no CRLF). */
static int parse_request_line(const uint8_t *p, size_t len,
			      struct ms_http_req *r, int *status_r,
			      const char **error_r)
{
	size_t i = 0;
	while (i < len && is_tchar(p[i]))
		i++;
	if (i == 0 || i >= len || p[i] != ' ')
		return refuse(400, "bad request line (method)", status_r,
			      error_r);
	if (i > MS_HTTP_MAX_METHOD)
		return refuse(501, "method too long", status_r, error_r);
	r->method = (const char *)p;
	r->method_len = i;
	size_t t = ++i;
	while (i < len && is_vchar(p[i]))
		i++;
	if (i == t || i >= len || p[i] != ' ')
		return refuse(400, "bad request line (target)", status_r,
			      error_r);
	if (p[t] != '/')
		return refuse(400, "the target is not an absolute path",
			      status_r, error_r);
	if (i - t > MS_HTTP_MAX_TARGET)
		return refuse(414, "target too long", status_r, error_r);
	const uint8_t *q = memchr(p + t, '?', i - t);
	r->path = (const char *)p + t;
	r->path_len = q ? (size_t)(q - (p + t)) : i - t;
	r->query = q ? (const char *)q + 1 : NULL;
	r->query_len = q ? (size_t)(p + i - q - 1) : 0;
	i++;
	const uint8_t *v = p + i;
	size_t vl = len - i;
	if (vl != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
	    v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return refuse(400, "bad request line (version)", status_r,
			      error_r);
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return refuse(505, "only HTTP/1.0 and HTTP/1.1 are spoken",
			      status_r, error_r);
	r->minor = v[7] - '0';
	return 0;
}

/* Connection: a comma-separated list of tokens. */
static void parse_connection(const uint8_t *v, size_t len, bool *close_r,
			     bool *ka_r)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		if (name_is(v + s, i - s, "close"))
			*close_r = true;
		else if (name_is(v + s, i - s, "keep-alive"))
			*ka_r = true;
	}
}

int ms_http_parse(const uint8_t *p, size_t len,
		  const struct ms_http_limits *lim, struct ms_http_req *req_r,
		  int *status_r, const char **error_r)
{
	size_t max_head = lim && lim->max_head ? lim->max_head
					       : MS_HTTP_MAX_HEAD_DEFAULT;
	size_t max_body = lim && lim->max_body ? lim->max_body
					       : MS_HTTP_MAX_BODY_DEFAULT;
	struct ms_http_req r = { 0 };
	size_t head;
	int ret;

	/* the request line, as soon as it is there */
	const uint8_t *eol = memchr(p, '\n', len < max_head ? len : max_head);
	if (eol != NULL && eol > p && eol[-1] == '\r') {
		ret = parse_request_line(p, (size_t)(eol - 1 - p), &r,
					 status_r, error_r);
		if (ret < 0)
			return ret;
	}
	if ((ret = scan_head(p, len, max_head, &head, status_r, error_r)) < 0)
		return ret;
	if (eol == NULL) /* cannot be: the head ends in CRLF CRLF */
		return refuse(400, "no request line", status_r, error_r);

	bool have_cl = false, have_te = false, chunked = false;
	bool have_host = false, close = false, ka = false, have_conn = false;
	uint64_t cl = 0;
	unsigned nheaders = 0;
	const uint8_t *line = eol + 1;
	const uint8_t *end = p + head - 2; /* the empty line */
	while (line < end) {
		const uint8_t *le = memchr(line, '\r', (size_t)(end - line));
		if (le == NULL)
			le = end; /* cannot be: every line ends in CRLF */
		size_t ll = (size_t)(le - line);
		if (++nheaders > MS_HTTP_MAX_HEADERS)
			return refuse(431, "too many header lines", status_r,
				      error_r);
		if (line[0] == ' ' || line[0] == '\t')
			return refuse(400, "folded header line (obs-fold)",
				      status_r, error_r);
		size_t n = 0;
		while (n < ll && is_tchar(line[n]))
			n++;
		if (n == 0 || n == ll || line[n] != ':')
			return refuse(400, "bad header line", status_r,
				      error_r);
		const uint8_t *v = line + n + 1;
		size_t vl = ll - n - 1;
		while (vl > 0 && (v[0] == ' ' || v[0] == '\t')) {
			v++;
			vl--;
		}
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		if (name_is(line, n, "content-length")) {
			if (have_cl)
				return refuse(400, "Content-Length twice",
					      status_r, error_r);
			have_cl = true;
			if (vl == 0 || vl > 19 || v[0] == '+' ||
			    ms_parse_u64((const char *)v, vl, &cl) < 0)
				return refuse(400, "bad Content-Length",
					      status_r, error_r);
		} else if (name_is(line, n, "transfer-encoding")) {
			have_te = true;
			if (vl == 7 && strncasecmp((const char *)v, "chunked",
						   7) == 0)
				chunked = true;
		} else if (name_is(line, n, "host")) {
			if (have_host)
				return refuse(400, "Host twice", status_r,
					      error_r);
			have_host = true;
		} else if (name_is(line, n, "authorization")) {
			if (r.auth != NULL)
				return refuse(400, "Authorization twice",
					      status_r, error_r);
			r.auth = (const char *)v;
			r.auth_len = vl;
		} else if (name_is(line, n, "content-type")) {
			if (r.content_type != NULL)
				return refuse(400, "Content-Type twice",
					      status_r, error_r);
			r.content_type = (const char *)v;
			r.content_type_len = vl;
		} else if (name_is(line, n, "connection")) {
			if (have_conn)
				return refuse(400, "Connection twice",
					      status_r, error_r);
			have_conn = true;
			parse_connection(v, vl, &close, &ka);
		}
		line = le + 2;
	}
	if (have_te)
		return chunked ? refuse(411, "chunked requests are not "
					     "accepted: send Content-Length",
					status_r, error_r)
			       : refuse(501, "unknown Transfer-Encoding",
					status_r, error_r);
	if (r.minor == 1 && !have_host)
		return refuse(400, "HTTP/1.1 without Host", status_r, error_r);
	if (!have_cl && (ms_http_method_is(&r, "POST") ||
			 ms_http_method_is(&r, "PUT")))
		return refuse(411, "a body needs Content-Length", status_r,
			      error_r);
	if (cl > max_body)
		return refuse(413, "body over its limit", status_r, error_r);
	if (len - head < cl)
		return MS_ETRUNC;
	r.body = p + head;
	r.body_len = (size_t)cl;
	r.total = head + (size_t)cl;
	r.keep_alive = r.minor == 1 ? !close : (ka && !close);
	*req_r = r;
	return 0;
}

bool ms_http_method_is(const struct ms_http_req *r, const char *m)
{
	return r->method_len == strlen(m) &&
	       memcmp(r->method, m, r->method_len) == 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ms_http_pct_decode(const char *s, size_t len, char *out,
		       size_t out_size)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/')
			return -EINVAL; /* a raw one ends a path segment */
		if (c == '%') {
			if (len - i < 3)
				return -EINVAL;
			int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
			if (h < 0 || l < 0)
				return -EINVAL;
			c = (unsigned char)(h * 16 + l);
			i += 2;
		}
		if (c < 0x20 || c == 0x7f)
			return -EINVAL;
		if (o + 1 >= out_size)
			return -EINVAL;
		out[o++] = (char)c;
	}
	if (out_size == 0)
		return -EINVAL;
	out[o] = '\0';
	return (int)o;
}

const char *ms_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	default: return "Unknown";
	}
}

int ms_http_response(struct ms_buf *out, int status, const char *ctype,
		     const char *extra, bool keep_alive, const void *body,
		     size_t body_len)
{
	char head[512];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\n"
			 "Server: mstored\r\n"
			 "%s%s%s"
			 "Content-Length: %zu\r\n"
			 "Connection: %s\r\n"
			 "Cache-Control: no-store\r\n",
			 status, ms_http_reason(status),
			 ctype ? "Content-Type: " : "", ctype ? ctype : "",
			 ctype ? "\r\n" : "", body_len,
			 keep_alive ? "keep-alive" : "close");
	if (n < 0 || (size_t)n >= sizeof(head))
		return MS_ETOOBIG;
	int ret = ms_buf_append(out, head, (size_t)n);
	if (ret == 0 && extra != NULL)
		ret = ms_buf_append(out, extra, strlen(extra));
	if (ret == 0)
		ret = ms_buf_append(out, "\r\n", 2);
	if (ret == 0 && body_len > 0)
		ret = ms_buf_append(out, body, body_len);
	return ret;
}
