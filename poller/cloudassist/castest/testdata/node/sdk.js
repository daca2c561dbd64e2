// The V2 Node SDK against casim, with its defaults (ACS3-HMAC-SHA256):
// TestNodeSDK runs it with CASIM_ENDPOINT, CASIM_KEY_ID, CASIM_SECRET and
// CASIM_INSTANCE set, and checks the JSON it prints.
const Ecs = require('@alicloud/ecs20140526');
const OpenApi = require('@alicloud/openapi-client');

const env = process.env;
const client = (secret) => new Ecs.default(new OpenApi.Config({accessKeyId: env.CASIM_KEY_ID, accessKeySecret: secret,
  endpoint: env.CASIM_ENDPOINT, protocol: 'HTTP', regionId: 'cn-hangzhou'}));
const regionId = 'cn-hangzhou';

async function finished(c, invokeId) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const d = await c.describeInvocations(new Ecs.DescribeInvocationsRequest({regionId, invokeId, includeOutput: true, contentEncoding: 'PlainText'}));
    const inv = d.body.invocations.invocation[0];
    if (!['Pending', 'Running'].includes(inv.invocationStatus) || Date.now() > deadline) return inv;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function main() {
  const c = client(env.CASIM_SECRET);
  const out = {};
  const run = await c.runCommand(new Ecs.RunCommandRequest({regionId, type: 'RunShellScript', commandContent: 'echo from node',
    contentEncoding: 'PlainText', instanceId: [env.CASIM_INSTANCE]}));
  const inv = await finished(c, run.body.invokeId);
  out.runStatus = inv.invocationStatus;
  out.runOutput = inv.invokeInstances.invokeInstance[0].output;
  const cmd = await c.createCommand(new Ecs.CreateCommandRequest({regionId, name: 'node-saved', type: 'RunShellScript',
    commandContent: Buffer.from('echo saved; exit 2').toString('base64')}));
  const invoked = await c.invokeCommand(new Ecs.InvokeCommandRequest({regionId, commandId: cmd.body.commandId, instanceId: [env.CASIM_INSTANCE]}));
  out.invokeStatus = (await finished(c, invoked.body.invokeId)).invocationStatus;
  const listed = await c.describeCommands(new Ecs.DescribeCommandsRequest({regionId, commandId: cmd.body.commandId, contentEncoding: 'PlainText'}));
  out.commandContent = listed.body.commands.command[0].commandContent;
  out.invokeTimes = listed.body.commands.command[0].invokeTimes;
  try {
    await client('not-the-secret').describeInvocations(new Ecs.DescribeInvocationsRequest({regionId}));
    out.wrongSecret = 'accepted';
  } catch (e) {
    out.wrongSecret = e.code;
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error('node SDK:', e.code || '', (e.message || String(e)).split('\n')[0]); process.exit(1); });
