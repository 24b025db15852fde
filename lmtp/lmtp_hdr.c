/*
 * lmtp_hdr.c - Return-Path, Delivered-To, Received; see lmtp_hdr.h.
 */
#include <stdio.h>

#include "lmtp_cmd.h"
#include "lmtp_hdr.h"

struct hb {
	struct ms_buf *out;
	int ret;
};

static void put(struct hb *b, const char *s, size_t n)
{
	if (b->ret == 0)
		b->ret = ms_buf_append(b->out, s, n);
}

static void puts_(struct hb *b, const char *s)
{
	put(b, s, strlen(s));
}

/* A client-given value, each unsafe byte as '?', at most 255 bytes. */
static void put_safe(struct hb *b, struct ms_pstr v)
{
	size_t n = v.len > 255 ? 255 : v.len;
	if (lmtp_utf8_printable(v.s, n)) {
		put(b, v.s, n);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v.s[i];
		char c = (char)(ch < 0x20 || ch >= 0x7f ? '?' : ch);
		put(b, &c, 1);
	}
}

int lmtp_hdr_build(const struct lmtp_hdr_info *h, struct ms_buf *out)
{
	struct hb b = { out, 0 };
	size_t start = out->len;
	char date[64];
	struct tm tm;

	puts_(&b, "Return-Path: <");
	put_safe(&b, h->sender);
	puts_(&b, ">\r\n");
	if (h->rcpt.len > 0) {
		puts_(&b, "Delivered-To: <");
		put_safe(&b, h->rcpt);
		puts_(&b, ">\r\n");
	}
	puts_(&b, "Received: from ");
	put_safe(&b, h->helo.len > 0 ? h->helo : MS_PSTR("unknown"));
	puts_(&b, " (");
	if (h->name.len > 0) {
		put_safe(&b, h->name);
		puts_(&b, " ");
	}
	puts_(&b, "[");
	put_safe(&b, h->addr.len > 0 ? h->addr : MS_PSTR("unknown"));
	puts_(&b, "])\r\n\tby ");
	put_safe(&b, h->by);
	puts_(&b, " (mstore-lmtpd) with ");
	puts_(&b, h->utf8 ? "UTF8LMTP" : "LMTP");
	puts_(&b, " id ");
	put_safe(&b, h->id);
	if (h->rcpt.len > 0) {
		puts_(&b, "\r\n\tfor <");
		put_safe(&b, h->rcpt);
		puts_(&b, ">");
	}
	if (gmtime_r(&h->now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000",
		     &tm) == 0)
		snprintf(date, sizeof(date), "Thu, 01 Jan 1970 00:00:00 +0000");
	puts_(&b, "; ");
	puts_(&b, date);
	puts_(&b, "\r\n");
	if (b.ret < 0)
		out->len = start;
	return b.ret;
}
