// Prefill a prompt, then feed one more token with the returned state, as transformers.js's
// generate() does; print the decode step's logits.
import { env, AutoModelForCausalLM, Tensor } from '@huggingface/transformers';
const [root, name, dtype, idsJson] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = root;
const ids = JSON.parse(idsJson);
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype, device: 'cpu' });
const tensor = (values) => new Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
const prompt = ids.slice(0, -1);
const first = await model({ input_ids: tensor(prompt), attention_mask: tensor(prompt.map(() => 1)) });
const past_key_values = model.getPastKeyValues(first, null);
const second = await model({
  input_ids: tensor(ids.slice(-1)), attention_mask: tensor(ids.map(() => 1)), past_key_values,
});
console.log(JSON.stringify(Array.from(second.logits.data)));
