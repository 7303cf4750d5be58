// A simulated PLC for the OPC-UA client source's tests: a node-opcua server with
// changing values, started by tests/peers.py:start_node_opcua_server.
//
//   node opcua_server.js '{"port": 4840, "root": "/tmp/x", "extra": 100,
//                          "interval_ms": 100, "user": "op", "password": "pw",
//                          "reject_unknown_certificates": false}'
//
// Variables (namespace 1, string node ids), all under the object PLC:
//   PLC.Temp     Double   a ramp, changes every interval_ms (history on: HistoryRead works)
//   PLC.Counter  Int32    +1 every interval_ms (history on, the last 100,000 values)
//   PLC.Flag     Boolean  toggles every interval_ms
//   PLC.Stop     Boolean  writable stop bit
//   PLC.V<i>     Double   i = 0 .. extra-1, each changes every interval_ms
//   PLC.Text     String   "batch-<n>", n = tick / 10: changes every 10 intervals
//   PLC.Mode     MachineMode (an enumeration: Idle, Running, Stopped), changes every 10
//   PLC.Array    Double[4] [tick, tick+1, tick+2, tick+3]
//   PLC.Morph    BaseDataType: the tick as a Double, or "text-<tick>" as a String after
//                a call of ToggleMorph() (the next call turns it back): a type change at run time
// Every value is written with setValueFromSource and a source timestamp of now.
// Methods on PLC, for the recovery tests (each acts on every session but the caller's and
// returns how many it touched, UInt32):
//   DropSessions()       the server closes those sessions (the client's next request gets
//                        BadSessionIdInvalid)
//   DropSubscriptions()  the server deletes their subscriptions (BadSubscriptionIdInvalid)
//   ToggleMorph()        PLC.Morph switches between Double and String (returns 1 or 0)
//   Halt(reason, code)   sets PLC.Stop (a PLC's stop method); code < 0: BadInvalidArgument
// Prints "READY <port>" on stdout once it listens; runs until killed.
"use strict";
const path = require("path");
const {
    OPCUAServer, OPCUACertificateManager, DataType, StatusCodes, nodesets,
} = require("node-opcua");

async function main() {
    const args = JSON.parse(process.argv[2] || "{}");
    const root = args.root || path.join(process.cwd(), "opcua-server");
    const interval = args.interval_ms || 100;
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(root, "pki"),
        automaticallyAcceptUnknownCertificate: !args.reject_unknown_certificates,
    });
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(root, "user-pki"), automaticallyAcceptUnknownCertificate: true,
    });
    const options = {
        port: args.port, hostname: "127.0.0.1",
        serverCertificateManager, userCertificateManager,
        nodeset_filename: [nodesets.standard],
        buildInfo: { productName: "edge-gateway test PLC" },
    };
    if (args.user) {
        options.allowAnonymous = false;
        options.userManager = {
            isValidUser: (user, password) => user === args.user && password === args.password,
        };
    }
    const server = new OPCUAServer(options);
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const plc = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "PLC" });
    const add = (name, dataType, value, writable) => ns.addVariable({
        componentOf: plc, nodeId: `s=PLC.${name}`, browseName: name, dataType,
        value: { dataType: DataType[dataType], value },
        accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
        userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
    });
    const temp = add("Temp", "Double", 20.0, false);
    addressSpace.installHistoricalDataNode(temp);
    const counter = add("Counter", "Int32", 0, false);
    addressSpace.installHistoricalDataNode(counter, { maxOnlineValues: 100000 });
    const flag = add("Flag", "Boolean", false, false);
    const stop = add("Stop", "Boolean", false, true);
    const text = add("Text", "String", "batch-0", false);
    const modeType = ns.addEnumerationType({
        browseName: "MachineMode", enumeration: ["Idle", "Running", "Stopped"] });
    const mode = ns.addVariable({
        componentOf: plc, nodeId: "s=PLC.Mode", browseName: "Mode", dataType: modeType,
        value: { dataType: DataType.Int32, value: 0 },
    });
    const array = ns.addVariable({
        componentOf: plc, nodeId: "s=PLC.Array", browseName: "Array", dataType: "Double",
        valueRank: 1, arrayDimensions: [4],
        value: { dataType: DataType.Double, arrayType: 1, value: new Float64Array(4) },
    });
    const morph = ns.addVariable({
        componentOf: plc, nodeId: "s=PLC.Morph", browseName: "Morph", dataType: "BaseDataType",
        value: { dataType: DataType.Double, value: 0.0 },
    });
    let morphed = false;
    const extras = [];
    for (let i = 0; i < (args.extra || 0); i++) extras.push(add(`V${i}`, "Double", 0.0, false));

    const others = (context) => server.engine.getSessions().filter(
        (session) => !context.session || session.nodeId.toString() !== context.session.nodeId.toString());
    const method = (name, act) => ns.addMethod(plc, {
        browseName: name, nodeId: `s=PLC.${name}`, inputArguments: [],
        outputArguments: [{ name: "count", dataType: DataType.UInt32 }],
    }).bindMethod(async (_inputs, context) => {
        const count = act(others(context));
        process.stderr.write(`${name}: ${count}\n`);
        return { statusCode: StatusCodes.Good,
                 outputArguments: [{ dataType: DataType.UInt32, value: count }] };
    });
    method("DropSessions", (sessions) => {
        for (const session of sessions) {
            server.engine.closeSession(session.authenticationToken, true, "Terminated");
        }
        return sessions.length;
    });
    method("DropSubscriptions", (sessions) => {
        let count = 0;
        for (const session of sessions) {
            for (const sub of [...session.publishEngine.subscriptions]) {
                session.deleteSubscription(sub.id);
                count += 1;
            }
        }
        return count;
    });

    method("ToggleMorph", () => { morphed = !morphed; return morphed ? 1 : 0; });
    // Halt(reason String, code Int16) -> UInt32: what a PLC's stop method does: sets
    // PLC.Stop and returns the code; a code < 0 is refused (BadInvalidArgument).
    ns.addMethod(plc, {
        browseName: "Halt", nodeId: "s=PLC.Halt",
        inputArguments: [{ name: "reason", dataType: DataType.String },
                         { name: "code", dataType: DataType.Int16 }],
        outputArguments: [{ name: "code", dataType: DataType.UInt32 }],
    }).bindMethod(async (inputs, _context) => {
        if (inputs[1].value < 0) return { statusCode: StatusCodes.BadInvalidArgument };
        stop.setValueFromSource({ dataType: DataType.Boolean, value: true });
        process.stderr.write(`Halt: ${inputs[0].value} ${inputs[1].value}\n`);
        return { statusCode: StatusCodes.Good,
                 outputArguments: [{ dataType: DataType.UInt32, value: inputs[1].value }] };
    });

    let tick = 0;
    setInterval(() => {
        tick += 1;
        const now = new Date();
        temp.setValueFromSource({ dataType: DataType.Double, value: 20.0 + (tick % 1000) * 0.01 },
            StatusCodes.Good, now);
        counter.setValueFromSource({ dataType: DataType.Int32, value: tick }, StatusCodes.Good, now);
        flag.setValueFromSource({ dataType: DataType.Boolean, value: tick % 2 === 1 },
            StatusCodes.Good, now);
        text.setValueFromSource({ dataType: DataType.String,
            value: `batch-${Math.floor(tick / 10)}` }, StatusCodes.Good, now);
        mode.setValueFromSource({ dataType: DataType.Int32, value: Math.floor(tick / 10) % 3 },
            StatusCodes.Good, now);
        array.setValueFromSource({ dataType: DataType.Double, arrayType: 1,
            value: new Float64Array([tick, tick + 1, tick + 2, tick + 3]) }, StatusCodes.Good, now);
        morph.setValueFromSource(morphed ? { dataType: DataType.String, value: `text-${tick}` }
            : { dataType: DataType.Double, value: tick }, StatusCodes.Good, now);
        for (let i = 0; i < extras.length; i++) {
            extras[i].setValueFromSource({ dataType: DataType.Double, value: tick + i / 1000 },
                StatusCodes.Good, now);
        }
    }, interval);

    await server.start();
    process.stdout.write(`READY ${server.endpoints[0].port}\n`);
}

main().catch((err) => {
    process.stderr.write(`opcua_server failed: ${err && err.stack || err}\n`);
    process.exit(1);
});
