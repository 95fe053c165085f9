/** `nerdbox demo`: not built yet. */
export function main(_args: string[]): Promise<number> {
  console.error("nerdbox demo: not implemented yet");
  return Promise.resolve(1);
}
