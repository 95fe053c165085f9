/** `nerdbox run`: not built yet. */
export function main(_args: string[]): Promise<number> {
  console.error("nerdbox run: not implemented yet");
  return Promise.resolve(1);
}
