'use strict'
// Protoqueue's JavaScript layer. The queue itself is Rust (`native.js` loads the addon); lib/
// holds the rest: the `Protoqueue` class (lib/queue.js), which converts values for the native
// side (lib/tasks.js, lib/options.js) and back (lib/decode.js) and wraps the user's handler
// (lib/dispatcher.js); the errors with their `code` (lib/errors.js); `listQueues`
// (lib/list-queues.js), `setLogger` (lib/logger.js) and the Prometheus bridge (lib/prometheus.js).
// This file only exports them.

const { ProtoqueueError } = require('./lib/errors.js')
const { listQueues } = require('./lib/list-queues.js')
const { setLogger } = require('./lib/logger.js')
const { registerMetrics } = require('./lib/prometheus.js')
const { Protoqueue } = require('./lib/queue.js')

module.exports.Protoqueue = Protoqueue
module.exports.listQueues = listQueues
module.exports.ProtoqueueError = ProtoqueueError
module.exports.registerMetrics = registerMetrics
module.exports.setLogger = setLogger
