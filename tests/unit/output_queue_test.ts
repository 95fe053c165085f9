/** lib/vm/output_queue.ts: bounded output queues with the drop and wait policies. */
import assert from "node:assert/strict";
import { OutputQueue } from "../../lib/vm/output_queue.ts";

/** A writable whose writes block until `release()`; records what it got. */
function gated() {
  const got: number[] = [];
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let closed = false;
  const stream = new WritableStream<Uint8Array>({
    async write(c) {
      await gate;
      got.push(...c);
    },
    close() {
      closed = true;
    },
  }, { highWaterMark: 1 });
  return { stream, got, release: () => open(), closed: () => closed };
}

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);
const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("drop: over the bound chunks are counted, never waited for; the trailer still lands", async () => {
  const g = gated();
  const q = new OutputQueue(g.stream, 10, "drop");
  assert.equal(q.push(bytes(4, 1)), undefined);
  assert.equal(q.push(bytes(4, 2)), undefined);
  assert.equal(q.push(bytes(4, 3)), undefined, "never a promise in drop mode");
  assert.equal(q.dropped, 4);
  assert.equal(q.queued, 8);
  g.release();
  await q.close(bytes(2, 9));
  assert.deepEqual(g.got, [1, 1, 1, 1, 2, 2, 2, 2, 9, 9]);
  assert.ok(g.closed());
  q.push(bytes(3, 4));
  assert.equal(q.dropped, 7, "after close everything is dropped");
});

Deno.test("wait: every byte is kept; over the bound the reader is told to wait until drained", async () => {
  const g = gated();
  const q = new OutputQueue(g.stream, 10, "wait");
  assert.equal(q.push(bytes(8, 1)), undefined);
  const wait = q.push(bytes(4, 2));
  assert.ok(wait instanceof Promise, "over the bound: a promise");
  let room = false;
  void wait!.then(() => (room = true));
  await tick();
  await tick();
  assert.equal(room, false, "no room while the consumer is blocked");
  g.release();
  await wait;
  assert.ok(q.queued <= 10);
  await q.close();
  assert.equal(g.got.length, 12);
  assert.equal(q.dropped, 0);
});

Deno.test("a failing consumer: the rest is dropped and a waiting reader is released", async () => {
  let fail!: (e: Error) => void;
  const failed = new Promise<void>((_, rej) => (fail = rej));
  const stream = new WritableStream<Uint8Array>({ write: () => failed }, { highWaterMark: 1 });
  const q = new OutputQueue(stream, 4, "wait");
  const wait = q.push(bytes(6, 1));
  assert.ok(wait instanceof Promise);
  fail(new Error("reader gone"));
  await wait;
  assert.equal(q.dropped, 6);
  assert.equal(q.push(bytes(2, 1)), undefined);
  assert.equal(q.dropped, 8);
  await q.close();
});
