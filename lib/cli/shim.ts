/** `nerdbox shim`: not built yet. */
export function main(_args: string[]): Promise<number> {
  console.error("nerdbox shim: not implemented yet");
  return Promise.resolve(1);
}
