// The Protobuf example (docs/guides/task-data.md): a worker and a
// producer of `shop.v1.Order` tasks, whose schema is proto/shop/v1/order.proto and whose code
// protoc-gen-es generated into gen/ (`npx buf generate` here regenerates it).
//
//   NATS_URL=nats://localhost:4222 node examples/protobuf/orders.mjs
import { create } from '@bufbuild/protobuf'

import { Protoqueue } from '../../index.mjs' // in your app: from 'protoqueue'
import { OrderSchema } from './gen/shop/v1/order_pb.js'

const config = { streamName: 'orders', subject: 'tasks.orders', schema: OrderSchema }

// The worker: `task.data` is a decoded shop.v1.Order (typed as `Order` in TypeScript).
const worker = new Protoqueue(config)
await worker.connect()
let left = 2
const done = new Promise((resolve) => {
  worker.process(async (task) => {
    const order = task.data
    const units = order.items.reduce((sum, item) => sum + item.quantity, 0)
    console.log(`order ${order.id} for ${order.customerEmail}: ${units} units, ${order.totalCents} cents (${task.contentType})`)
    if (--left === 0) resolve()
    return { success: true }
  })
})

// The producer: an init object or a message built with protobuf-es's `create`.
const producer = new Protoqueue(config)
await producer.connect()
await producer.enqueue({
  data: { id: 'o-1', customerEmail: 'ada@example.com', items: [{ sku: 'tea', quantity: 2 }], totalCents: 800n },
})
await producer.enqueue({
  data: create(OrderSchema, { id: 'o-2', customerEmail: 'alan@example.com', items: [{ sku: 'cake', quantity: 1 }] }),
})
try {
  await producer.enqueue({ data: { id: 'o-3', discount: 5 } })
} catch (err) {
  console.log(`refused: ${err.code}`) // ERR_PQ_SERIALIZE: `discount` is not a field of shop.v1.Order
}

await done
await Promise.all([producer.disconnect(), worker.disconnect()])
