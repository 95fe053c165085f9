/** nerdbox's version, printed by `--version` and reported to containerd. */
export const VERSION = "0.1.0";
