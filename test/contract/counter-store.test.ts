import { MemoryCounterStore } from "../../src/store/memory/counters.ts";
import { counterStoreContract } from "./counter-store.contract.ts";

// One process, one store: both handles are the same object.
counterStoreContract("memory", async () => {
  const store = new MemoryCounterStore();
  return { a: store, b: store, close: async () => undefined };
});
