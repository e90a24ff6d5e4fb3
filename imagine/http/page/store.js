// What this browser made, kept across reloads and after the server deletes a job's files
// (job_ttl_s): one record per job with its parameters and its images as Blobs, in IndexedDB
// (localStorage holds only strings, about 5 MB). Without IndexedDB (some private windows) the
// records live in memory until the page closes.
//
// A record: {id (the job id), created (ms), status, params {model, prompt, ...}, seeds [..],
// images [Blob], metrics, error}.

const DB_NAME = "imagine";
const STORE = "jobs";
const KEEP = 100; // records kept, newest first: a gallery, not an archive

let database = null;
const memory = new Map();

function open() {
  database ??= new Promise((resolve) => {
    let request;
    try {
      request = indexedDB.open(DB_NAME, 1);
    } catch {
      resolve(null);
      return;
    }
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "id" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve(null);
  });
  return database;
}

async function run(mode, work) {
  const db = await open();
  if (db === null) return work(null).result; // the memory fallback answers {result} at once
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request?.result);
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

export async function all() {
  const items = await run("readonly", (s) => (s ? s.getAll() : { result: [...memory.values()] }));
  return (items || []).sort((a, b) => b.created - a.created);
}

export async function put(item) {
  await run("readwrite", (s) => (s ? s.put(item) : { result: memory.set(item.id, item) }));
}

export async function remove(id) {
  await run("readwrite", (s) => (s ? s.delete(id) : { result: memory.delete(id) }));
}

export async function prune() {
  for (const old of (await all()).slice(KEEP)) await remove(old.id);
}
