/*
 * udsync - ship the committed log of a store to its DR site.
 *
 * SYNOPSIS
 *	udsync keygen FILE
 *	udsync -c mstore.conf send
 *	udsync -c mstore.conf recv
 *	udsync -c mstore.conf config
 *
 * DESCRIPTION
 *	keygen writes a new secret key (mode 0600, never overwritten) and
 *	prints its public key: put it in the other site's [udsync] peer_key.
 *	send runs at the primary site next to mstored ([store] names the
 *	store and mstored's admin socket; [udsync] connect, key_file,
 *	peer_key); recv runs at the DR site and is the only writer of the
 *	DR store named by its [store] section ([udsync] listen).  Both run
 *	until killed; send reconnects, recv accepts the next connection.
 *	docs/replication.md has the protocol, docs/config.md the keys.
 *
 * DIAGNOSTICS
 *	One line per event on stderr.  Exit 1 on a configuration or start
 *	error, or when the DR store belongs to another store.
 *
 * SECURITY
 *	Only the peer whose public key is pinned is accepted; every frame is
 *	authenticated and encrypted, and nothing received is used before its
 *	checks pass (docs/replication.md, "Link security").
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "udsync.h"

static int usage(void)
{
	fprintf(stderr, "usage: udsync keygen FILE\n"
			"       udsync -c mstore.conf send|recv|config\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *conf = NULL, *err = "";

	ms_msg_init("udsync");
	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0) {
		fprintf(stderr, "udsync: libsodium failed to initialise\n");
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "keygen") == 0) {
		char pub[65];
		if (udsync_keygen(argv[2], pub, &err) < 0) {
			fprintf(stderr, "udsync: keygen %s: %s\n", argv[2], err);
			return 1;
		}
		printf("%s\n", pub);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "-c") == 0)
		conf = argv[2];
	else
		return usage();
	if (strcmp(argv[3], "send") == 0) {
		(void)udsync_send_run(conf, &err); /* returns on failure only */
	} else if (strcmp(argv[3], "recv") == 0) {
		(void)udsync_recv_run(conf, &err); /* returns on failure only */
	} else if (strcmp(argv[3], "config") == 0) {
		struct udsync_cfg c;
		if (udsync_cfg_load(conf, &c, &err) == 0) {
			int ret = udsync_cfg_dump(&c, stdout);
			udsync_cfg_free(&c);
			return ret < 0 ? 1 : 0;
		}
	} else {
		return usage();
	}
	msg_error("failed error=%s", msg_q(err));
	return 1;
}
