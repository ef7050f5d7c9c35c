// onnxruntime_attention.mjs: ONNX Runtime's CPU attention, for comparison with kernattn_bench.
//
// Times com.microsoft MultiHeadAttention (one head, batch 1, Nq = Nk = N, d = dv = 64, float)
// in onnxruntime-node on the CPU execution provider, the same problem as kernattn_bench's
// BM_Softmax (one thread) and BM_Softmax_2T (two threads). The one-node ONNX model is encoded
// here by hand (a minimal protobuf writer), so nothing but onnxruntime-node is needed. Before
// timing, the output at N = 64 is checked against softmax(Q K^T / sqrt(64)) V computed in double.
//
// For each (threads, N): `repetitions` repetitions, each running the session for at least
// `min-time` seconds and recording the mean time per call; the table gives the median, minimum
// and maximum over repetitions and GFLOP/s = 4 N^2 64 / median. The time includes the binding's
// per-call overhead (feeds, output allocation), small next to the O(N^2) work at N >= 1024.
//
//   node bench/onnxruntime_attention.mjs [--ort DIR] [--n 1024,4096] [--threads 1,2]
//       [--repetitions 5] [--min-time 0.5] [--json FILE] [--version]
//
// --ort DIR is the folder that holds node_modules/onnxruntime-node (default: $KERNATTN_ORT_DIR,
// else the current directory); --version only prints the ONNX Runtime version. ONNX Runtime is
// an optional peer: it is never needed to build or test kernattn. bench/compare_onnxruntime.sh
// runs this next to kernattn_bench.

import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const kHeadDim = 64;
const kCheckN = 64;
const kTolerance = 1e-4;

function usage(message) {
  if (message) console.error(message);
  console.error('usage: node onnxruntime_attention.mjs [--ort DIR] [--n 1024,4096] [--threads 1,2] ' +
                '[--repetitions 5] [--min-time 0.5] [--json FILE] [--version]');
  process.exit(2);
}

function parseArgs(argv) {
  const options = {
    ort: process.env.KERNATTN_ORT_DIR || process.cwd(),
    n: [1024, 4096], threads: [1, 2], repetitions: 5, minTime: 0.5, json: null, version: false,
  };
  const positiveInts = (text) => {
    const values = text.split(',').map(Number);
    if (values.some((v) => !Number.isInteger(v) || v <= 0)) usage(`not positive integers: ${text}`);
    return values;
  };
  for (let i = 0; i < argv.length; ++i) {
    let [flag, value] = argv[i].split(/=(.*)/s);
    if (flag === '--version') { options.version = true; continue; }
    if (flag === '--help' || flag === '-h') usage();
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      value = argv[++i];
    }
    switch (flag) {
      case '--ort': options.ort = value; break;
      case '--n': options.n = positiveInts(value); break;
      case '--threads': options.threads = positiveInts(value); break;
      case '--repetitions': options.repetitions = positiveInts(value)[0]; break;
      case '--min-time':
        options.minTime = Number(value);
        if (!(options.minTime >= 0)) usage(`bad --min-time: ${value}`);
        break;
      case '--json': options.json = value; break;
      default: usage(`unknown option: ${flag}`);
    }
  }
  return options;
}

function loadOrt(dir) {
  try {
    // Resolve from DIR as if a module there imported it: DIR/node_modules/onnxruntime-node.
    return createRequire(join(resolve(dir), 'noop.js'))('onnxruntime-node');
  } catch (error) {
    console.log(`onnxruntime-node not found from ${resolve(dir)} (${String(error.message).split('\n')[0]}); ` +
                'install it with `npm install --ignore-scripts onnxruntime-node` in a scratch folder ' +
                'and pass that folder with --ort or KERNATTN_ORT_DIR');
    process.exit(2);
  }
}

// ---- A minimal protobuf writer: a message is an array of byte chunks. ----

const utf8 = new TextEncoder();

function varint(value) {  // non-negative integers below 2^53
  const bytes = [];
  while (value >= 0x80) {
    bytes.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  bytes.push(value);
  return Uint8Array.from(bytes);
}

const concat = (chunks) => {
  const out = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) { out.set(chunk, offset); offset += chunk.length; }
  return out;
};
const intField = (field, value) => concat([varint(field * 8 + 0), varint(value)]);  // wire type 0
const bytesField = (field, bytes) =>                                                 // wire type 2
  concat([varint(field * 8 + 2), varint(bytes.length), bytes]);
const stringField = (field, text) => bytesField(field, utf8.encode(text));
const message = (...fields) => concat(fields);

// ---- The ONNX model (field numbers from onnx/onnx.proto). ----

const kFloat = 1;         // TensorProto.DataType FLOAT
const kAttributeInt = 2;  // AttributeProto.AttributeType INT

function valueInfo(name, shape) {
  const dims = shape.map((size) => bytesField(1, message(intField(1, size))));  // Dimension.dim_value
  const tensorType = message(intField(1, kFloat), bytesField(2, message(...dims)));  // elem_type, shape
  return message(stringField(1, name), bytesField(2, message(bytesField(1, tensorType))));
}

/// ModelProto of one com.microsoft MultiHeadAttention node, num_heads = 1, inputs [1, n, 64].
function attentionModel(n) {
  const shape = [1, n, kHeadDim];
  const numHeads = message(stringField(1, 'num_heads'), intField(3, 1), intField(20, kAttributeInt));
  const node = message(
    stringField(1, 'query'), stringField(1, 'key'), stringField(1, 'value'),  // input
    stringField(2, 'output'),                                                 // output
    stringField(3, 'attention'),                                              // name
    stringField(4, 'MultiHeadAttention'),                                     // op_type
    bytesField(5, numHeads),                                                  // attribute
    stringField(7, 'com.microsoft'));                                         // domain
  const graph = message(
    bytesField(1, node), stringField(2, 'kernattn_comparison'),
    bytesField(11, valueInfo('query', shape)), bytesField(11, valueInfo('key', shape)),
    bytesField(11, valueInfo('value', shape)), bytesField(12, valueInfo('output', shape)));
  const opset = (domain, version) => message(stringField(1, domain), intField(2, version));
  return message(
    intField(1, 8),                                                           // ir_version
    bytesField(8, opset('', 17)), bytesField(8, opset('com.microsoft', 1)),   // opset_import
    bytesField(7, graph));                                                    // graph
}

// ---- Inputs and the reference. ----

/// mulberry32 (Tommy Ettinger's 32-bit PRNG): uniform doubles on [0, 1) from a fixed seed.
function mulberry32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/// Q, K, V of [1, n, 64], entries uniform on [-sqrt 3, sqrt 3) (unit variance), fixed seed.
function makeInputs(n) {
  const random = mulberry32(20240521);
  const fill = () => Float32Array.from({ length: n * kHeadDim },
                                       () => (random() * 2 - 1) * Math.sqrt(3));
  return { q: fill(), k: fill(), v: fill() };
}

/// softmax(Q K^T / sqrt(d)) V in double, row-major [n, d].
function naiveAttention({ q, k, v }, n) {
  const out = new Float64Array(n * kHeadDim);
  const scores = new Float64Array(n);
  const scale = 1 / Math.sqrt(kHeadDim);
  for (let i = 0; i < n; ++i) {
    let max = -Infinity;
    for (let j = 0; j < n; ++j) {
      let dot = 0;
      for (let c = 0; c < kHeadDim; ++c) dot += q[i * kHeadDim + c] * k[j * kHeadDim + c];
      scores[j] = dot * scale;
      max = Math.max(max, scores[j]);
    }
    let sum = 0;
    for (let j = 0; j < n; ++j) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
    for (let j = 0; j < n; ++j)
      for (let c = 0; c < kHeadDim; ++c) out[i * kHeadDim + c] += scores[j] / sum * v[j * kHeadDim + c];
  }
  return out;
}

// ---- Sessions and timing. ----

async function makeSession(ort, n, threads) {
  const session = await ort.InferenceSession.create(attentionModel(n), {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const inputs = makeInputs(n);
  const tensor = (data) => new ort.Tensor('float32', data, [1, n, kHeadDim]);
  const feeds = { query: tensor(inputs.q), key: tensor(inputs.k), value: tensor(inputs.v) };
  return { session, inputs, run: async () => (await session.run(feeds)).output };
}

async function check(ort) {
  const { session, inputs, run } = await makeSession(ort, kCheckN, 1);
  const output = await run();
  await session.release();
  const reference = naiveAttention(inputs, kCheckN);
  if (output.data.length !== reference.length) return Infinity;
  return output.data.reduce((worst, x, i) => Math.max(worst, Math.abs(x - reference[i])), 0);
}

/// Mean milliseconds per call over at least `minTime` seconds (at least one call).
async function repetition(run, minTime) {
  const start = process.hrtime.bigint();
  let calls = 0, elapsed = 0;
  do {
    await run();
    ++calls;
    elapsed = Number(process.hrtime.bigint() - start) * 1e-9;
  } while (elapsed < minTime);
  return elapsed * 1e3 / calls;
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const ort = loadOrt(options.ort);
  const version = ort.env?.versions?.common ?? 'unknown';
  if (options.version) { console.log(version); return; }

  console.log(`ONNX Runtime ${version} (onnxruntime-node, CPU execution provider), Node ${process.version}`);
  const error = await check(ort);
  console.log(`check: MultiHeadAttention vs softmax(Q K^T / 8) V in double, N = ${kCheckN}: ` +
              `max abs error ${error.toExponential(2)} (tolerance ${kTolerance})`);
  if (!(error <= kTolerance)) {
    console.error('check failed: ONNX Runtime output differs from the reference');
    process.exit(1);
  }

  console.log(`d = dv = ${kHeadDim}, one head, batch 1; ${options.repetitions} repetitions of >= ` +
              `${options.minTime} s\n threads      N   median ms     min ms     max ms    GFLOP/s`);
  const results = [];
  for (const threads of options.threads) {
    for (const n of options.n) {
      const { session, run } = await makeSession(ort, n, threads);
      await run();  // warm-up: the first call allocates and plans
      const times = [];
      for (let r = 0; r < options.repetitions; ++r) times.push(await repetition(run, options.minTime));
      await session.release();
      const result = {
        threads, n, median_ms: median(times), min_ms: Math.min(...times), max_ms: Math.max(...times),
        times_ms: times,
      };
      result.gflops = 4 * n * n * kHeadDim / (result.median_ms * 1e-3) * 1e-9;
      results.push(result);
      console.log(`${String(threads).padStart(8)} ${String(n).padStart(6)} ` +
                  [result.median_ms, result.min_ms, result.max_ms].map((t) => t.toFixed(3).padStart(10)).join(' ') +
                  ` ${result.gflops.toFixed(2).padStart(10)}`);
    }
  }
  if (options.json) {
    writeFileSync(options.json, JSON.stringify({
      onnxruntime_version: version, node_version: process.version, head_dim: kHeadDim,
      repetitions: options.repetitions, min_time_s: options.minTime,
      check: { n: kCheckN, max_abs_error: error }, results,
    }, null, 2) + '\n');
  }
}

await main();
