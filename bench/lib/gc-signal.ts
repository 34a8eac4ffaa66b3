/**
 * Preloaded (`node --expose-gc --import`) into the edge by the memory benchmark: on SIGUSR2, a full
 * garbage collection, then one line on stderr with `process.memoryUsage()`:
 *
 *   BENCH-MEM {"rss":...,"heapTotal":...,"heapUsed":...,"external":...,"arrayBuffers":...}
 *
 * The edge itself does not handle SIGUSR2; nothing else changes.
 */
const gc = (globalThis as { gc?: () => void }).gc;
process.on("SIGUSR2", () => {
  gc?.();
  gc?.();
  // Weak callbacks and finalizers run after the first collections; collect once more after them.
  setTimeout(() => {
    gc?.();
    process.stderr.write(`BENCH-MEM ${JSON.stringify(process.memoryUsage())}\n`);
  }, 200).unref();
});
