// Calls xds:///SERVICE N times through @grpc/grpc-js-xds and prints, as one JSON line, how
// many calls each backend served and how many failed: node client.js SERVICE N
const grpc = require("@grpc/grpc-js");
require("@grpc/grpc-js-xds").register();

const [service, n] = [process.argv[2], Number(process.argv[3])];
const client = new grpc.Client(`xds:///${service}`, grpc.credentials.createInsecure());
const bytes = (b) => b;
const served = {};
let failed = 0;

function call() {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 5000);
    client.makeUnaryRequest("/test.Echo/Who", bytes, bytes, Buffer.alloc(0),
      { deadline, waitForReady: true }, (err, reply) => {
        if (err) {
          failed += 1;
          console.error("call failed:", err.code, err.details);
        } else {
          const name = reply.toString();
          served[name] = (served[name] || 0) + 1;
        }
        resolve();
      });
  });
}

(async () => {
  for (let i = 0; i < n; i++) await call();
  console.log(JSON.stringify({ served, failed }));
  client.close();
  process.exit(0);
})();
