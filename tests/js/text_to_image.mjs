// Drives the real @huggingface/inference client against a live imagine server.
// Usage: node text_to_image.mjs <endpointUrl> <out-file> '<json {inputs, parameters?, accessToken?}>'
// Prints one JSON line: {"ok": true, "type": <blob type>, "bytes": n} or {"ok": false, "message": ...}.
import { writeFile } from "node:fs/promises";
import { InferenceClient } from "@huggingface/inference";

const [endpointUrl, outFile, argsJson] = process.argv.slice(2);
const { accessToken, ...args } = JSON.parse(argsJson);
const client = new InferenceClient(accessToken ?? "");
try {
  const blob = await client.textToImage({ endpointUrl, ...args }, { outputType: "blob" });
  const bytes = Buffer.from(await blob.arrayBuffer());
  await writeFile(outFile, bytes);
  console.log(JSON.stringify({ ok: true, type: blob.type, bytes: bytes.length }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, name: err.name, message: String(err.message) }));
}
