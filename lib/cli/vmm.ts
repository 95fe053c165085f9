/** `nerdbox vmm`: not built yet. */
export function main(_args: string[]): Promise<number> {
  console.error("nerdbox vmm: not implemented yet");
  return Promise.resolve(1);
}
