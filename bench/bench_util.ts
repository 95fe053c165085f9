/** What several benches share: the median of samples and a bulk of incompressible files. */

/** The (lower) median of `xs`; NaN when there are none. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
}

/**
 * Adds `bytes` of incompressible files under `dir`: 2000 × 64 KiB in usr/share/small (what a
 * package-heavy image has many of), then 50 MiB files in usr/share/big.
 */
export async function addIncompressibleFiles(dir: string, bytes: number): Promise<void> {
  const mib = new Uint8Array(1024 * 1024);
  const chunk = crypto.getRandomValues(new Uint8Array(65536));
  for (let o = 0; o < mib.length; o += chunk.length) mib.set(chunk, o);
  let left = bytes;
  await Deno.mkdir(`${dir}/usr/share/small`, { recursive: true });
  await Deno.mkdir(`${dir}/usr/share/big`, { recursive: true });
  for (let i = 0; i < 2000; i++) {
    mib[0] = i % 256;
    await Deno.writeFile(`${dir}/usr/share/small/f${i}`, mib.subarray(0, 65536));
    left -= 65536;
  }
  for (let i = 0; left > 0; i++) {
    const f = await Deno.open(`${dir}/usr/share/big/blob${i}`, { write: true, create: true });
    for (let m = 0; m < 50 && left > 0; m++) {
      mib[1] = m;
      await f.write(mib);
      left -= mib.length;
    }
    f.close();
  }
}
