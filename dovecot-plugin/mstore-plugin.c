/*
 * mstore-plugin.c - the module Dovecot loads (lib20_mstore_plugin.so):
 * registers the "mstore" mail storage class and the login hook that
 * completes the local folder list from the store.  Load it through the
 * global mail_plugins = mstore, so that imap, pop3, lmtp and doveadm all
 * know the class (a protocol-only mail_plugins leaves doveadm without).
 */
#include "lib.h"
#include "module-dir.h"
#include "mail-storage-hooks.h"
#include "mstore-storage.h"

extern struct mail_storage_hooks mstore_storage_hooks;

const char *mstore_plugin_version = DOVECOT_ABI_VERSION;

void mstore_plugin_init(struct module *module);
void mstore_plugin_deinit(void);

void mstore_plugin_init(struct module *module)
{
	mail_storage_class_register(&mstore_storage);
	mail_storage_hooks_add(module, &mstore_storage_hooks);
}

void mstore_plugin_deinit(void)
{
	mail_storage_hooks_remove(&mstore_storage_hooks);
	mail_storage_class_unregister(&mstore_storage);
}
