// Reads a JSON array of Kubernetes objects on stdin and validates each custom resource against the schema of
// its CRD, compiled into the @kubernetes-models packages. Prints one JSON line per object:
// {"kind", "name", "error"} with error null when valid. Exits 1 when any object is invalid or unknown.
const PACKAGES = {
  "kafka.strimzi.io": "@kubernetes-models/strimzi-kafka-operator",
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function check(object) {
  const [group, version] = object.apiVersion.split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !version) return `no schema for ${object.apiVersion}`;
  let Model;
  try {
    Model = (await import(`${pkg}/${group}/${version}/${object.kind}`))[object.kind];
  } catch (error) {
    return `no schema for ${object.apiVersion} ${object.kind}: ${error.message}`;
  }
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return error.message;
  }
}

let failed = false;
for (const object of await readStdin()) {
  const error = await check(object);
  failed ||= error !== null;
  console.log(JSON.stringify({ kind: object.kind, name: object.metadata?.name ?? null, error }));
}
process.exit(failed ? 1 : 0);
