// An alarm client (node-opcua's Alarms & Conditions support) for the gateway's tests:
// what UaExpert's or a SCADA's alarm list does.
//
// Usage: node opcua_alarms.js '<json spec>'
// Spec: { endpoint, pki, user?, password?, ns: index of the gateway's namespace,
//         security?: "none" (default) | "sign_encrypt", cert_only?: print
//         {"certificate": path} once the client certificate exists, and exit }
// It connects, subscribes to events of the Server object with the
// standard select clauses and a where clause OfType(AcknowledgeableConditionType), calls
// ConditionRefresh, then prints one JSON line per event ({"event": {...}}) and runs the
// commands it reads on stdin, one JSON object per line, answering each with one line
// ({"answer": cmd, "status": "<StatusCode name>"}):
//   {"cmd": "ack"|"confirm", "condition": "<ConditionId>", "comment": "..."}  (with the
//       condition's last EventId), {"cmd": "reset", "condition": ...} (AlarmConditionType
//       Reset, i=18199), {"cmd": "refresh"}, {"cmd": "quit"}.
// "READY" on stderr once the first ConditionRefresh returned.
"use strict";

const readline = require("node:readline");
const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, TimestampsToReturn,
  UserTokenType, resolveNodeId, constructEventFilter, ofType, callConditionRefresh,
  fieldsToJson,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const spec = JSON.parse(process.argv[2]);
const FIELDS = [
  "EventId", "EventType", "SourceNode", "SourceName", "Time", "ReceiveTime", "Message",
  "Severity", "ConditionClassId", "ConditionName", "BranchId", "Retain", "EnabledState.Id",
  "ActiveState", "ActiveState.Id", "AckedState", "AckedState.Id", "ConfirmedState.Id",
  "LatchedState.Id", "Comment", "ClientUserId", "Quality", "LimitState.CurrentState",
  `${spec.ns}:Lot`, `${spec.ns}:Wafer`, "ConditionId",
];

function say(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function plain(v) {
  if (!v || v.value === null || v.value === undefined) return null;
  const x = v.value;
  if (Buffer.isBuffer(x)) return x.toString("hex");
  if (x instanceof Date) return x.toISOString();
  if (typeof x === "object" && "text" in x) return x.text;
  if (typeof x === "object" && typeof x.toString === "function" && x.identifierType !== undefined) {
    return x.toString();
  }
  if (typeof x === "object" && x.name !== undefined && x.value !== undefined) return x.name;
  return x;
}

async function main() {
  const certificateManager = new OPCUACertificateManager({
    rootFolder: spec.pki, automaticallyAcceptUnknownCertificate: true,
  });
  await certificateManager.initialize();
  const secure = spec.security === "sign_encrypt";
  const client = OPCUAClient.create({
    applicationName: "edge-gateway-alarm-test", endpointMustExist: false,
    securityMode: secure ? MessageSecurityMode.SignAndEncrypt : MessageSecurityMode.None,
    securityPolicy: secure ? SecurityPolicy.Basic256Sha256 : SecurityPolicy.None,
    clientCertificateManager: certificateManager,
    connectionStrategy: { maxRetry: 3, initialDelay: 200, maxDelay: 1000 },
  });
  try {
    await client.createDefaultCertificate();
  } catch (e) { /* older versions create it in connect() */ }
  if (spec.cert_only) {
    say({ certificate: client.certificateFile || null });
    return;
  }
  await client.connect(spec.endpoint);
  const identity = spec.user
    ? { type: UserTokenType.UserName, userName: spec.user, password: spec.password }
    : { type: UserTokenType.Anonymous };
  const session = await client.createSession(identity);
  const subscription = await session.createSubscription2({
    requestedPublishingInterval: 50, requestedLifetimeCount: 1000,
    requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 1000,
    publishingEnabled: true, priority: 10,
  });
  const filter = constructEventFilter(FIELDS, ofType("AcknowledgeableConditionType"));
  const item = await subscription.monitor(
    { nodeId: resolveNodeId("Server"), attributeId: AttributeIds.EventNotifier },
    { queueSize: 1000, filter, discardOldest: false, samplingInterval: 0 },
    TimestampsToReturn.Both);
  const lastEventId = new Map();
  item.on("changed", (fields) => {
    const pojo = fieldsToJson(FIELDS, fields, true);
    const ev = {};
    for (const [k, v] of Object.entries(pojo)) ev[k.replace(/^\d+:/, "")] = plain(v);
    if (ev.conditionId) lastEventId.set(ev.conditionId, pojo.eventId.value);
    say({ event: ev });
  });
  const status = await callConditionRefresh(session, subscription.subscriptionId);
  process.stderr.write(`READY ${status.name}\n`);

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    try {
      let sc;
      if (cmd.cmd === "quit") break;
      if (cmd.cmd === "refresh") {
        sc = await callConditionRefresh(session, subscription.subscriptionId);
      } else if (cmd.cmd === "ack" || cmd.cmd === "confirm") {
        const eventId = cmd.event_id ? Buffer.from(cmd.event_id, "hex")
          : lastEventId.get(cmd.condition);
        const conditionId = resolveNodeId(cmd.condition);
        sc = cmd.cmd === "ack"
          ? await session.acknowledgeCondition(conditionId, eventId, cmd.comment || "")
          : await session.confirmCondition(conditionId, eventId, cmd.comment || "");
      } else if (cmd.cmd === "reset") {
        const res = await session.call({
          objectId: resolveNodeId(cmd.condition), methodId: resolveNodeId("ns=0;i=18199"),
          inputArguments: [],
        });
        sc = res.statusCode;
      } else {
        throw new Error(`unknown command ${cmd.cmd}`);
      }
      say({ answer: cmd.cmd, status: sc.name });
    } catch (err) {
      say({ answer: cmd.cmd, status: "error", error: String(err && err.message) });
    }
  }
  await subscription.terminate();
  await session.close();
  await client.disconnect();
}

main().then(() => process.exit(0), (err) => {
  say({ fatal: String(err && err.stack || err) });
  process.exit(1);
});
