/** The branded type of a network namespace path that was checked to name a network namespace. */

declare const netnsBrand: unique symbol;
/**
 * A path naming a network namespace (an nsfs file of type CLONE_NEWNET), made only by
 * lib/net/netns.ts validateNetnsPath, which opens it (the check needs the filesystem).
 */
export type NetnsPath = string & { readonly [netnsBrand]: "NetnsPath" };
