// ESM entry point: the same classes as the CommonJS entry (index.js).
import protoqueue from './index.js'

export const { Protoqueue, ProtoqueueError, listQueues, registerMetrics, setLogger } = protoqueue
export default protoqueue
