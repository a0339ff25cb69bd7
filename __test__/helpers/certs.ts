// Certificates for TLS tests, made with `openssl` in a temporary folder: a CA, a server certificate
// for 127.0.0.1/localhost and a client certificate signed by it, and a second CA nobody trusts.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const EC_KEY = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1'

export class Pki {
  readonly dir = mkdtempSync(join(tmpdir(), 'pq-pki-'))

  constructor() {
    for (const ca of ['ca', 'other-ca']) {
      this.openssl(
        `req -x509 ${EC_KEY} -nodes -days 2 -subj /CN=protoqueue-test-${ca} ` +
          '-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign ' +
          `-keyout ${ca}.key -out ${ca}.pem`,
      )
    }
    this.issue('server', 'serverAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
    this.issue('client', 'clientAuth', '')
  }

  /** The path of a file in the folder, e.g. `ca.pem`, `client.key`. */
  path(name: string): string {
    return join(this.dir, name)
  }

  /** A nats-server `tls { }` block with the server certificate; `extra` e.g. `verify: true`. */
  serverTls(extra = ''): string {
    const q = (name: string) => JSON.stringify(this.path(name))
    return `tls {\n cert_file: ${q('server.pem')}\n key_file: ${q('server.key')}\n ca_file: ${q('ca.pem')}\n timeout: 5\n ${extra}\n}\n`
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true })
  }

  private issue(name: string, usage: string, extra: string): void {
    writeFileSync(
      this.path(`${name}.ext`),
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\n${extra}`,
    )
    this.openssl(`req ${EC_KEY} -nodes -subj /CN=protoqueue-test-${name} -keyout ${name}.key -out ${name}.csr`)
    this.openssl(
      `x509 -req -days 2 -in ${name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -extfile ${name}.ext -out ${name}.pem`,
    )
  }

  private openssl(args: string): void {
    execFileSync('openssl', args.split(/\s+/), { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] })
  }
}
