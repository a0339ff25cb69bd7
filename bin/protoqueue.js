#!/usr/bin/env node
// @ts-check
'use strict'
// `npx protoqueue --help`: the command line over a queue. See lib/cli/ and docs/operating.md "Command line".

const { escapeLines } = require('../lib/cli/format.js')
const { main } = require('../lib/cli/main.js')
const { version } = require('../package.json')

// A reader that went away (`protoqueue dlq list | head`) is not an error.
process.stdout.on('error', (err) => {
  if (/** @type {NodeJS.ErrnoException} */ (err).code === 'EPIPE') process.exit(0)
  throw err
})

main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }, version).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    process.stderr.write(`protoqueue: unexpected error: ${escapeLines(err instanceof Error ? String(err.stack) : String(err))}\n`)
    process.exitCode = 1
  },
)
