// @hocuspocus/server with @hocuspocus/extension-sqlite, as a peer server for
// bench/compare.sh. Configured as its documentation's SQLite example: the
// extension's defaults (store debounced by the server's defaults), on a file.
//   HOST=127.0.0.1 PORT=1234 DB=path/to/file.db node server.js
import { Server } from "@hocuspocus/server";
import { SQLite } from "@hocuspocus/extension-sqlite";

const port = Number(process.env.PORT);
const database = process.env.DB;
if (!port || !database) {
	console.error("PORT and DB must be set");
	process.exit(2);
}

const server = new Server({
	address: process.env.HOST || "127.0.0.1",
	port,
	quiet: true,
	extensions: [new SQLite({ database })],
});
await server.listen();
console.log(`listening on ws://${process.env.HOST || "127.0.0.1"}:${port}`);
