/** Test helper: a busybox root filesystem (re-exports the product's builder). */
export { busyboxApplets, makeBusyboxRootfs } from "../../lib/vm/busybox_rootfs.ts";
