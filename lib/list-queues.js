// @ts-check
'use strict'
// `listQueues()`: the Protoqueue queues of a server, found over a connection of their own.

const { listQueues: nativeListQueues } = require('../native.js')
const { isPlainObject } = require('./checks.js')
const { describe } = require('./describe.js')
const { ProtoqueueError, native } = require('./errors.js')
const { plainConfig } = require('./options.js')

/**
 * Every Protoqueue queue on the server `config` connects to (its `url`, `auth`, `tls`,
 * `options.connectTimeout`; `streamName` and `subject` are not needed), over a connection of its
 * own; with the server's URL, credentials masked.
 */
async function listQueues(config = {}) {
  const plain = plainConfig(config)
  if (!isPlainObject(plain)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `listQueues(config) takes an object like { url?, auth?, tls? }, got ${describe(config)}`)
  }
  const listing = await native(() => nativeListQueues(plain))
  return {
    server: listing.server,
    queues: listing.queues.map((queue) => ({ ...queue, deadLetterStream: queue.deadLetterStream ?? undefined })),
  }
}

module.exports = { listQueues }
