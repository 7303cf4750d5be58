// Independent Sparkplug B codec (Eclipse Tahu's sparkplug-payload) for the gateway's tests.
//
// Reads one JSON request per line on stdin, answers one JSON line on stdout:
//   {"op": "decode", "b64": "<payload>"} -> {"ok": true, "payload": {...}}
//   {"op": "encode", "payload": {...}}   -> {"ok": true, "b64": "<payload>"}
// Longs (timestamps, seq, alias, Int64 values) are given as decimal strings; an unset
// is_historical stays absent. A payload that does not decode answers {"ok": false, error}.
"use strict";

const readline = require("readline");
const codec = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (value === null || value === undefined) return value;
  if (typeof value === "object" && typeof value.toNumber === "function"
      && typeof value.low === "number") return value.toString();
  if (typeof value === "bigint") return value.toString();
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return Buffer.from(value).toString("base64");
  }
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let answer;
  try {
    const req = JSON.parse(line);
    if (req.op === "decode") {
      answer = { ok: true, payload: plain(codec.decodePayload(Buffer.from(req.b64, "base64"))) };
    } else if (req.op === "encode") {
      answer = { ok: true, b64: Buffer.from(codec.encodePayload(req.payload)).toString("base64") };
    } else {
      answer = { ok: false, error: `unknown op ${req.op}` };
    }
  } catch (err) {
    answer = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
