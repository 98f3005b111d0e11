// Runs a MicroPython script on the WebAssembly port (npm @micropython/micropython-webassembly-pyscript)
// under Node.js, with host directories copied into its in-memory file system.
//
//   node run.mjs <package dir> <heap bytes> <script path in MicroPython's FS> <host dir>=<mp dir> ...
//
// Every regular file of each <host dir> (not recursive) is copied to <mp dir>. The script's
// stdout and stderr go to ours; the exit status is 1 if it raised.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pkg, heap, script, ...mounts] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(path.join(pkg, "micropython.mjs")).href);
const mp = await loadMicroPython({
  heapsize: Number(heap),
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const m of mounts) {
  const [host, dest] = m.split("=");
  mp.FS.mkdirTree(dest);
  for (const name of fs.readdirSync(host)) {
    const src = path.join(host, name);
    if (fs.statSync(src).isFile()) mp.FS.writeFile(path.posix.join(dest, name), fs.readFileSync(src));
  }
}
try {
  mp.runPython(`
with open(${JSON.stringify(script)}) as f:
    _code = f.read()
exec(compile(_code, ${JSON.stringify(script)}, "exec"), {"__name__": "__main__"})
`);
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exit(1);
}
