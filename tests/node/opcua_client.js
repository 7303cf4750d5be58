// Independent OPC-UA client (node-opcua) for the gateway's tests and benchmark.
//
// Usage: node opcua_client.js '<json spec>'
// Spec: { endpoint, pki, security: "none" | "sign_encrypt", user?, password?, ns_uri,
//         steps: [ {browse: true} | {read: [nodeId...]} | {eu: [nodeId...]}
//                | {subscribe: [nodeId...], ms, sampling_ms?} | {call: {object, method}}
//                | {events: ms, then_wait_for?: n} ],
//         cert_only?: only create the client certificate and print its path,
//         attempts?: [{user?, password?}] try these logins instead of the steps }
// Node ids are strings "s=<id>" in the namespace ns_uri.
// Prints exactly one JSON object on stdout: {ok, error?, certificate, results: [...]}.
"use strict";

const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, TimestampsToReturn,
  UserTokenType, ClientSubscription, ClientMonitoredItemGroup, ClientMonitoredItem,
  BrowseDirection, DataType, resolveNodeId, constructEventFilter,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const spec = JSON.parse(process.argv[2]);
const out = { ok: false, results: [], certificate: null };

function finish(code) {
  // exit only once the pipe took everything (process.exit would cut it at 64 KiB)
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(code));
}

function int64(dataType, value) {
  // node-opcua gives (U)Int64 as [high, low] 32-bit words
  if ((dataType === DataType.Int64 || dataType === DataType.UInt64) && Array.isArray(value)) {
    return value[0] * 4294967296 + value[1];
  }
  return value;
}

function statusName(sc) {
  return sc && sc.name ? sc.name : String(sc);
}

function plain(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object" && typeof value.toJSON === "function") return value.toJSON();
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return value;
}

async function browseTree(session, nodeId, depth, acc) {
  const res = await session.browse({
    nodeId, browseDirection: BrowseDirection.Forward, includeSubtypes: true,
    referenceTypeId: "HierarchicalReferences", resultMask: 63,
  });
  for (const ref of res.references || []) {
    const id = ref.nodeId.toString();
    acc.push({ parent: nodeId.toString(), nodeId: id, browseName: ref.browseName.name,
               nodeClass: ref.nodeClass, typeDefinition: ref.typeDefinition.toString() });
    if (depth > 0 && (ref.nodeClass === 1 || ref.nodeClass === 2)) {
      await browseTree(session, ref.nodeId, depth - 1, acc);
    }
  }
}

async function main() {
  const cm = new OPCUACertificateManager({
    rootFolder: spec.pki, automaticallyAcceptUnknownCertificate: true,
  });
  await cm.initialize();
  const secure = spec.security === "sign_encrypt";
  const client = OPCUAClient.create({
    applicationName: "edge-gateway-test-client",
    endpointMustExist: false,
    securityMode: secure ? MessageSecurityMode.SignAndEncrypt : MessageSecurityMode.None,
    securityPolicy: secure ? SecurityPolicy.Basic256Sha256 : SecurityPolicy.None,
    clientCertificateManager: cm,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 60000,
  });
  client.on("backoff", () => {});
  try {
    await client.createDefaultCertificate();
  } catch (e) { /* older versions create it in connect() */ }
  out.certificate = client.certificateFile || null;
  if (spec.cert_only) { out.ok = true; return finish(0); }
  await client.connect(spec.endpoint);
  if (spec.attempts) {
    // several logins over one secure channel: [{user?, password?}] -> [{user, ok, error}]
    for (const a of spec.attempts) {
      const id = a.user
        ? { type: UserTokenType.UserName, userName: a.user, password: a.password }
        : { type: UserTokenType.Anonymous };
      try {
        const s = await client.createSession(id);
        await s.close();
        out.results.push({ user: a.user || null, ok: true });
      } catch (e) {
        out.results.push({ user: a.user || null, ok: false, error: e.message });
      }
    }
    await client.disconnect();
    out.ok = true;
    return finish(0);
  }
  const identity = spec.user
    ? { type: UserTokenType.UserName, userName: spec.user, password: spec.password }
    : { type: UserTokenType.Anonymous };
  let session;
  try {
    session = await client.createSession(identity);
  } catch (e) {
    out.error = "session: " + e.message;
    await client.disconnect();
    return finish(3);
  }
  const nsArray = await session.readNamespaceArray();
  const ns = nsArray.indexOf(spec.ns_uri);
  const nid = (s) => resolveNodeId(`ns=${ns};${s}`);
  for (const step of spec.steps || []) {
    if (step.browse) {
      const acc = [];
      await browseTree(session, resolveNodeId("ObjectsFolder"), step.depth || 4, acc);
      out.results.push({ browse: acc });
    } else if (step.read) {
      const dvs = await session.read(step.read.map((s) => ({
        nodeId: nid(s), attributeId: AttributeIds.Value })));
      const types = await session.read(step.read.map((s) => ({
        nodeId: nid(s), attributeId: AttributeIds.DataType })));
      out.results.push({ read: step.read.map((s, i) => ({
        nodeId: s, value: plain(int64(dvs[i].value.dataType, dvs[i].value.value)), variantType: DataType[dvs[i].value.dataType],
        status: statusName(dvs[i].statusCode),
        sourceTimestamp: dvs[i].sourceTimestamp ? dvs[i].sourceTimestamp.toISOString() : null,
        dataType: types[i].value.value ? types[i].value.value.toString() : null,
      })) });
    } else if (step.eu) {
      const res = [];
      for (const s of step.eu) {
        const path = await session.translateBrowsePath({
          startingNode: nid(s),
          relativePath: { elements: [{ referenceTypeId: resolveNodeId("ns=0;i=46"), isInverse: false,
            includeSubtypes: true, targetName: { namespaceIndex: 0, name: "EngineeringUnits" } }] },
        });
        const target = path.targets && path.targets[0];
        if (!target) { res.push({ nodeId: s, eu: null }); continue; }
        const dv = await session.read({ nodeId: target.targetId, attributeId: AttributeIds.Value });
        const eu = dv.value.value;
        res.push({ nodeId: s, eu: eu ? { unitId: eu.unitId, displayName: eu.displayName.text,
          description: eu.description.text, namespaceUri: eu.namespaceUri } : null });
      }
      out.results.push({ eu: res });
    } else if (step.subscribe) {
      const sub = ClientSubscription.create(session, {
        requestedPublishingInterval: step.publishing_ms || 100, requestedLifetimeCount: 1000,
        requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 0, publishingEnabled: true,
        priority: 10,
      });
      const items = step.subscribe.map((s) => ({ nodeId: nid(s), attributeId: AttributeIds.Value }));
      const group = ClientMonitoredItemGroup.create(sub, items, {
        samplingInterval: step.sampling_ms === undefined ? 0 : step.sampling_ms,
        discardOldest: true, queueSize: 1,
      }, TimestampsToReturn.Both);
      let count = 0;
      const last = {};
      const first = {};
      group.on("changed", (item, dv) => {
        count += 1;
        const key = item.itemToMonitor.nodeId.value;
        const v = { value: plain(dv.value.value), status: statusName(dv.statusCode) };
        if (!(key in first)) first[key] = v;
        last[key] = v;
      });
      await new Promise((r) => group.once("initialized", r));
      const t0 = Date.now();
      if (spec.signal_ready) process.stderr.write("SUBSCRIBED\n");
      await new Promise((r) => setTimeout(r, step.ms));
      const seconds = (Date.now() - t0) / 1000;
      await sub.terminate();
      out.results.push({ subscribe: { count, seconds, first, last } });
    } else if (step.events) {
      const sub = ClientSubscription.create(session, {
        requestedPublishingInterval: 100, requestedLifetimeCount: 1000,
        requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 0, publishingEnabled: true,
        priority: 10,
      });
      const fields = ["EventType", "SourceName", "Message", "Severity", "Time"];
      const item = ClientMonitoredItem.create(sub,
        { nodeId: resolveNodeId("Server"), attributeId: AttributeIds.EventNotifier },
        { samplingInterval: 0, discardOldest: true, queueSize: 100,
          filter: constructEventFilter(fields) }, TimestampsToReturn.Both);
      const events = [];
      item.on("changed", (values) => {
        events.push(Object.fromEntries(fields.map((f, i) => [f, plain(values[i].value)])));
      });
      await new Promise((r) => item.once("initialized", r));
      process.stderr.write("SUBSCRIBED\n");
      const deadline = Date.now() + step.events;
      while (Date.now() < deadline && events.length < (step.then_wait_for || 1e9)) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await sub.terminate();
      out.results.push({ events });
    } else if (step.call) {
      const res = await session.call({
        objectId: nid(step.call.object), methodId: nid(step.call.method), inputArguments: [],
      });
      out.results.push({ call: { status: statusName(res.statusCode),
        outputs: (res.outputArguments || []).map((v) => plain(v.value)) } });
    }
  }
  await session.close();
  await client.disconnect();
  out.ok = true;
  return finish(0);
}

main().catch((e) => {
  out.error = e && e.message ? e.message : String(e);
  finish(2);
});
