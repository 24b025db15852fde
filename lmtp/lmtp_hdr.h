/*
 * lmtp_hdr.h - the header lines mstore-lmtpd puts above a message:
 * Return-Path, Delivered-To (single-recipient transactions only; see
 * docs/lmtp.md) and Received.  Pure: strings in, bytes appended.
 *
 *   Return-Path: <sender>
 *   Delivered-To: <rcpt>                        (only with rcpt given)
 *   Received: from HELO (NAME [ADDR])
 *   	by HOST (mstore-lmtpd) with LMTP id ID
 *   	for <rcpt>; Tue, 03 Jun 2025 10:00:00 +0000   ("for" with rcpt)
 *
 * "with" is LMTP, or UTF8LMTP for an SMTPUTF8 transaction (RFC 6531).
 * Every value is checked before it goes into a header: a byte that is a
 * control character (CR, LF, NUL...) or breaks the UTF-8 rule becomes
 * '?', so nothing a client sends can add a header line.  A field that is
 * empty is left out (no NAME: "from HELO ([ADDR])").
 */
#ifndef LMTP_HDR_H
#define LMTP_HDR_H

#include <stdbool.h>
#include <time.h>

#include "buf.h"
#include "proto.h"

struct lmtp_hdr_info {
	struct ms_pstr sender;	 /* envelope sender; empty for <> */
	struct ms_pstr rcpt;	 /* the one recipient, or empty */
	struct ms_pstr helo;	 /* the client's LHLO (or XCLIENT HELO) */
	struct ms_pstr name;	 /* client host name (XCLIENT NAME) */
	struct ms_pstr addr;	 /* client address */
	struct ms_pstr by;	 /* our host name */
	struct ms_pstr id;	 /* transaction id */
	bool utf8;		 /* SMTPUTF8 transaction */
	time_t now;
};

/* Append the header lines to out.  0, or MS_ETOOBIG (out->max). */
int lmtp_hdr_build(const struct lmtp_hdr_info *h, struct ms_buf *out);

#endif
