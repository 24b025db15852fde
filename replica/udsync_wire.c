/*
 * udsync_wire.c - the plaintext messages inside udsync's encrypted frames
 * (docs/replication.md, "Messages").  Pure: bytes in, struct out; every
 * length is checked against what is left, and a message ends exactly
 * with its last field.  Fuzzed by tests/fuzz/fuzz_udsync_wire.c.
 *
 *   u8 type, then by type (integers little-endian):
 *   AUTH    u8[32] transcript hash
 *   RHELLO  u8[16] store id, u8 has_store (0/1), u64 seg, u64 off,
 *           u64 seq, u64 timeline
 *   META    u8[80] the mstore.meta file
 *   DATA    u64 seg, u64 off, 1..UDSYNC_MAX_DATA bytes (the rest)
 *   ACK     u64 seg, u64 off, u64 seq
 *   BEAT    u64 seg, u64 off, u64 seq, u64 time_ms
 *   ERROR   u16 n, n bytes of text (n <= UDSYNC_MAX_ERROR)
 */
#include <errno.h>

#include "rec.h"
#include "udsync.h"

static const char *const names[] = {
	[UDSYNC_AUTH] = "auth",	  [UDSYNC_RHELLO] = "rhello",
	[UDSYNC_META] = "meta",	  [UDSYNC_DATA] = "data",
	[UDSYNC_ACK] = "ack",	  [UDSYNC_BEAT] = "beat",
	[UDSYNC_ERROR] = "error",
};

const char *udsync_type_name(unsigned type)
{
	if (type == 0 || type > UDSYNC_TYPE_MAX)
		return "unknown";
	return names[type];
}

int udsync_wire_decode(const uint8_t *p, size_t len, struct udsync_msg *m_r,
		       const char **error_r)
{
	struct udsync_msg m;
	struct ms_rd rd;
	const uint8_t *b;
	int ret;

	memset(&m, 0, sizeof(m));
	ms_rd_init(&rd, p, len);
	m.type = ms_rd_u8(&rd);
	if (rd.err) {
		*error_r = "empty message";
		return MS_ETRUNC;
	}
	switch (m.type) {
	case UDSYNC_AUTH:
		if ((b = ms_rd_bytes(&rd, 32)) != NULL)
			memcpy(m.u.auth, b, 32);
		break;
	case UDSYNC_RHELLO:
		if ((b = ms_rd_bytes(&rd, MS_STORE_ID_SIZE)) != NULL)
			memcpy(m.u.rhello.store_id, b, MS_STORE_ID_SIZE);
		m.u.rhello.has_store = ms_rd_u8(&rd);
		m.u.rhello.seg = ms_rd_u64(&rd);
		m.u.rhello.off = ms_rd_u64(&rd);
		m.u.rhello.seq = ms_rd_u64(&rd);
		m.u.rhello.timeline = ms_rd_u64(&rd);
		if (!rd.err && m.u.rhello.has_store > 1) {
			*error_r = "rhello: has_store is not 0 or 1";
			return MS_ECORRUPT;
		}
		break;
	case UDSYNC_META:
		if ((b = ms_rd_bytes(&rd, MS_META_SIZE)) != NULL)
			memcpy(m.u.meta, b, MS_META_SIZE);
		break;
	case UDSYNC_DATA:
		m.u.data.seg = ms_rd_u64(&rd);
		m.u.data.off = ms_rd_u64(&rd);
		if (rd.err)
			break;
		if (rd.left == 0 || rd.left > UDSYNC_MAX_DATA) {
			*error_r = ms_errf("data: %zu bytes, not 1..%u",
					   rd.left, UDSYNC_MAX_DATA);
			return MS_ECORRUPT;
		}
		m.u.data.len = (uint32_t)rd.left;
		m.u.data.p = ms_rd_bytes(&rd, rd.left);
		break;
	case UDSYNC_ACK:
		m.u.ack.seg = ms_rd_u64(&rd);
		m.u.ack.off = ms_rd_u64(&rd);
		m.u.ack.seq = ms_rd_u64(&rd);
		break;
	case UDSYNC_BEAT:
		m.u.beat.seg = ms_rd_u64(&rd);
		m.u.beat.off = ms_rd_u64(&rd);
		m.u.beat.seq = ms_rd_u64(&rd);
		m.u.beat.time_ms = ms_rd_u64(&rd);
		break;
	case UDSYNC_ERROR: {
		uint16_t n;
		const uint8_t *s = ms_rd_str(&rd, &n);
		if (!rd.err && n > UDSYNC_MAX_ERROR) {
			*error_r = "error: text too long";
			return MS_ECORRUPT;
		}
		m.u.error.s = (const char *)s;
		m.u.error.len = n;
		break;
	}
	default:
		*error_r = ms_errf("unknown message type %u", m.type);
		return MS_ECORRUPT;
	}
	if ((ret = ms_rd_end(&rd)) < 0) {
		*error_r = ms_errf("%s: %s", udsync_type_name(m.type),
				   ret == MS_ETRUNC ? "truncated"
						    : "bytes after the end");
		return ret;
	}
	*m_r = m;
	return 0;
}

int udsync_wire_encode(const struct udsync_msg *m, struct ms_buf *out)
{
	size_t start = out->len;
	int ret = ms_wr_u8(out, m->type);

	switch (m->type) {
	case UDSYNC_AUTH:
		ret |= ms_wr_bytes(out, m->u.auth, 32);
		break;
	case UDSYNC_RHELLO:
		if (m->u.rhello.has_store > 1)
			ret = -EINVAL;
		ret |= ms_wr_bytes(out, m->u.rhello.store_id, MS_STORE_ID_SIZE);
		ret |= ms_wr_u8(out, m->u.rhello.has_store);
		ret |= ms_wr_u64(out, m->u.rhello.seg);
		ret |= ms_wr_u64(out, m->u.rhello.off);
		ret |= ms_wr_u64(out, m->u.rhello.seq);
		ret |= ms_wr_u64(out, m->u.rhello.timeline);
		break;
	case UDSYNC_META:
		ret |= ms_wr_bytes(out, m->u.meta, MS_META_SIZE);
		break;
	case UDSYNC_DATA:
		if (m->u.data.len == 0 || m->u.data.len > UDSYNC_MAX_DATA)
			ret = -EINVAL;
		ret |= ms_wr_u64(out, m->u.data.seg);
		ret |= ms_wr_u64(out, m->u.data.off);
		ret |= ms_wr_bytes(out, m->u.data.p, m->u.data.len);
		break;
	case UDSYNC_ACK:
		ret |= ms_wr_u64(out, m->u.ack.seg);
		ret |= ms_wr_u64(out, m->u.ack.off);
		ret |= ms_wr_u64(out, m->u.ack.seq);
		break;
	case UDSYNC_BEAT:
		ret |= ms_wr_u64(out, m->u.beat.seg);
		ret |= ms_wr_u64(out, m->u.beat.off);
		ret |= ms_wr_u64(out, m->u.beat.seq);
		ret |= ms_wr_u64(out, m->u.beat.time_ms);
		break;
	case UDSYNC_ERROR:
		if (m->u.error.len > UDSYNC_MAX_ERROR)
			ret = -EINVAL;
		ret |= ms_wr_u16(out, m->u.error.len);
		ret |= ms_wr_bytes(out, m->u.error.s, m->u.error.len);
		break;
	default:
		ret = -EINVAL;
	}
	if (ret != 0) {
		out->len = start;
		return ret < 0 && ret == -EINVAL ? -EINVAL : MS_ETOOBIG;
	}
	return 0;
}
