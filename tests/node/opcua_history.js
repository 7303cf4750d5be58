// HistoryRead with node-opcua's client, for the gateway's history tests.
//
// Usage: node opcua_history.js '<json spec>'
// Spec: { endpoint, pki, ns_uri,
//         reads: [ { node: "s=<id>", start: iso|null, end: iso|null, max: n,
//                    events?: [field names] (read events of the Server object instead),
//                    where?: a WhereClause tree for the event filter:
//                      {op: "And"|"Or"|"Not"|"Equals"|"GreaterThanOrEqual"|..., args: [..]}
//                      | {ofType: "i=2915"} | {field: "Severity"}
//                      | {lit: value, type: "UInt16"|"DateTime"|"String"|"NodeId"|...},
//                    cp?: "garbage" (send this continuation point first) } ] }
// Each read walks its continuation points to the end with session.historyRead.
// Prints one JSON object: {ok, error?, results: [{pages, status: [..], values|events}]}.
"use strict";

const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, resolveNodeId, TimestampsToReturn,
  HistoryReadRequest, ReadRawModifiedDetails, ReadEventDetails, constructEventFilter,
  ContentFilterElement, FilterOperator, LiteralOperand, SimpleAttributeOperand, DataType,
  AttributeIds, makeContentFilter, ofType, coerceQualifiedName,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const spec = JSON.parse(process.argv[2]);
const out = { ok: false, results: [] };

function finish(code) {
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(code));
}

function plain(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === "number") return v[0] * 4294967296 + v[1];
  if (v instanceof Date) return v.toISOString();
  if (Buffer.isBuffer(v)) return v.toString("hex");
  if (typeof v === "object" && v.text !== undefined) return v.text;
  if (typeof v === "object" && typeof v.toString === "function" && v.namespace !== undefined) return v.toString();
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return v;
}

function date(s) {
  return s ? new Date(s) : new Date(Date.UTC(1601, 0, 1));
}

// A WhereClause tree (see the usage) as node-opcua filter objects.
function clause(t) {
  if (t.ofType) return ofType(t.ofType);
  if (t.field) {
    return new SimpleAttributeOperand({ typeDefinitionId: resolveNodeId("BaseEventType"),
      attributeId: AttributeIds.Value, browsePath: [coerceQualifiedName(t.field)] });
  }
  if (t.type) {
    let v = t.lit;
    if (t.type === "DateTime") v = new Date(v);
    if (t.type === "NodeId") v = resolveNodeId(v);
    return new LiteralOperand({ value: { dataType: DataType[t.type], value: v } });
  }
  return new ContentFilterElement({ filterOperator: FilterOperator[t.op],
    filterOperands: t.args.map(clause) });
}

async function walk(session, ns, r) {
  const nodeId = r.events ? resolveNodeId("Server") : resolveNodeId(`ns=${ns};${r.node}`);
  const details = r.events
    ? new ReadEventDetails({ startTime: date(r.start), endTime: date(r.end),
        numValuesPerNode: r.max || 0,
        filter: constructEventFilter(r.events, r.where ? makeContentFilter(clause(r.where))
                                                       : undefined) })
    : new ReadRawModifiedDetails({ isReadModified: false, startTime: date(r.start),
        endTime: date(r.end), numValuesPerNode: r.max || 0, returnBounds: false });
  const res = { pages: 0, status: [], values: [], events: [] };
  let cp = r.cp ? Buffer.from(r.cp) : null;
  for (let guard = 0; guard < 100000; guard++) {
    const resp = await session.historyRead(new HistoryReadRequest({
      historyReadDetails: details, timestampsToReturn: TimestampsToReturn.Both,
      releaseContinuationPoints: false,
      nodesToRead: [{ nodeId, continuationPoint: cp, dataEncoding: undefined }],
    }));
    const hr = resp.results[0];
    res.pages += 1;
    res.status.push(hr.statusCode.name);
    if (hr.historyData) {
      for (const dv of hr.historyData.dataValues || []) {
        res.values.push({ v: plain(dv.value ? dv.value.value : null), status: dv.statusCode.name,
          ts: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
          ps: dv.sourcePicoseconds || 0 });
      }
      for (const ev of hr.historyData.events || []) {
        res.events.push(Object.fromEntries(
          r.events.map((f, i) => [f, plain(ev.eventFields[i].value)])));
      }
    }
    cp = hr.continuationPoint && hr.continuationPoint.length ? hr.continuationPoint : null;
    if (!cp || hr.statusCode.isNotGood()) break;
  }
  return res;
}

async function main() {
  const cm = new OPCUACertificateManager({ rootFolder: spec.pki,
    automaticallyAcceptUnknownCertificate: true });
  await cm.initialize();
  const client = OPCUAClient.create({
    applicationName: "edge-gateway-history-test", endpointMustExist: false,
    securityMode: MessageSecurityMode.None, securityPolicy: SecurityPolicy.None,
    clientCertificateManager: cm, connectionStrategy: { maxRetry: 0 },
    requestedSessionTimeout: 60000,
  });
  await client.connect(spec.endpoint);
  const session = await client.createSession();
  const ns = (await session.readNamespaceArray()).indexOf(spec.ns_uri);
  for (const r of spec.reads) {
    out.results.push(await walk(session, ns, r));
  }
  await session.close();
  await client.disconnect();
  out.ok = true;
  finish(0);
}

main().catch((e) => { out.error = e.stack || String(e); finish(2); });
