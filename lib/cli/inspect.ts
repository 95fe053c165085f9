/** `nerdbox inspect`: not built yet. */
export function main(_args: string[]): Promise<number> {
  console.error("nerdbox inspect: not implemented yet");
  return Promise.resolve(1);
}
