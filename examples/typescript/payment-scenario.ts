// The seed's payment scenario through a TypeScript client generated from
// the daemon's OpenAPI document: openapi-typescript writes the types
// (schema.d.ts), openapi-fetch makes the calls. `scripts/clients`
// generates the types, type-checks this file against them and runs it.
//
//   node build/payment-scenario.js URL [TOKEN]
//
// Each step checks what the daemon answered; the first that does not hold
// stops the run with its reason. Prints one line when every step held.

import { randomUUID } from "node:crypto";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Problem = components["schemas"]["Problem"];

function expect(condition: boolean, what: string): asserts condition {
  if (!condition) {
    console.error(`typescript: payment scenario failed: ${what}`);
    process.exit(1);
  }
}

/** The problem document of an error answer. */
function problem(error: unknown): Problem {
  expect(typeof error === "object" && error !== null && "type" in error, `not a problem: ${JSON.stringify(error)}`);
  return error as Problem;
}

async function main(): Promise<void> {
  const [url, token = ""] = process.argv.slice(2);
  expect(url !== undefined, "usage: payment-scenario URL [TOKEN]");
  const client = createClient<paths>({
    baseUrl: url,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  const key = `create-payment-${randomUUID()}`;

  // Create with an Idempotency-Key; the retry replays the original.
  const create = {
    params: { header: { "Idempotency-Key": key } },
    body: { reducer: "payment", event: { Requested: { request: { amount_requested: 10000 } } } },
  };
  const created = await client.POST("/v1/logs", create);
  expect(created.response.status === 201 && created.data !== undefined, `create answered ${created.response.status}`);
  const logId = created.data.log_id;
  expect(created.response.headers.get("location") === `/v1/logs/${logId}`, "Location header");
  expect(!created.data.replayed, "a first create marked replayed");
  const retry = await client.POST("/v1/logs", create);
  expect(retry.data?.replayed === true && retry.data.log_id === logId, "the retry did not replay");
  expect(retry.response.headers.get("idempotent-replayed") === "true", "Idempotent-Replayed header");

  const events = (ifMatch?: string) => ({
    params: { path: { id: logId }, header: ifMatch ? { "If-Match": ifMatch } : {} },
  });

  // Append with If-Match: the log must end at index 0.
  const authorized = await client.POST("/v1/logs/{id}/events", {
    ...events('"0"'),
    body: { event: { Authorized: { amount: 10000, approval_code: "xyz123" } } },
  });
  expect(authorized.data?.last_index === 1, `authorize answered ${authorized.response.status}`);

  // The aggregate; its ETag is the next append's If-Match.
  const aggregate = { params: { path: { id: logId } } };
  const reduced = await client.GET("/v1/logs/{id}/aggregate", aggregate);
  expect(reduced.data !== undefined, `aggregate answered ${reduced.response.status}`);
  const etag = reduced.response.headers.get("etag");
  expect(etag === '"1"', `ETag ${etag}`);
  const state = reduced.data.aggregate as { amount_outstanding: number };
  expect(state.amount_outstanding === 10000, "outstanding after authorize");

  const captured = await client.POST("/v1/logs/{id}/events", {
    ...events(etag),
    body: { event: { Captured: { amount: 4000, statement_descriptor: "Widgets, Inc" } } },
  });
  expect(captured.response.status === 200, `capture answered ${captured.response.status}`);

  // A second writer with the same If-Match loses: 412 with current_index.
  const late = await client.POST("/v1/logs/{id}/events", {
    ...events(etag),
    body: { event: { Captured: { amount: 4000 } } },
  });
  expect(late.response.status === 412, `a stale If-Match answered ${late.response.status}`);
  expect(late.response.headers.get("content-type") === "application/problem+json", "412 content type");
  const conflict = problem(late.error);
  expect(conflict.type === "urn:eventlogs:problem:concurrent-append", `412 type ${conflict.type}`);
  expect(conflict.current_index === 2, `current_index ${conflict.current_index}`);

  // Refunding more than is outstanding is refused; nothing is stored.
  const tooMuch = await client.POST("/v1/logs/{id}/events", {
    ...events(),
    body: { event: { Refunded: { amount: 7000 } } },
  });
  expect(tooMuch.response.status === 422, `an over-refund answered ${tooMuch.response.status}`);
  const refused = problem(tooMuch.error);
  expect(refused.type === "urn:eventlogs:problem:reducer-rejected-event" && refused.index === 3, "422 problem");

  // Without If-Match: appended at the end.
  const refunded = await client.POST("/v1/logs/{id}/events", {
    ...events(),
    body: { event: { Refunded: { amount: 6000, reference_number: "abc789" } } },
  });
  expect(refunded.response.status === 200, `refund answered ${refunded.response.status}`);
  const last = await client.GET("/v1/logs/{id}/aggregate", aggregate);
  expect(last.data !== undefined, `aggregate answered ${last.response.status}`);
  const settled = last.data.aggregate as { amount_outstanding: number; amount_refunded: number };
  expect(settled.amount_outstanding === 0 && settled.amount_refunded === 6000, "settled");
  expect(last.data.through_index === 3, `through_index ${last.data.through_index}`);

  // The events, a page of 3 with a Link to the rest.
  const page = await client.GET("/v1/logs/{id}/events", {
    params: { path: { id: logId }, query: { limit: 3 } },
  });
  expect(page.data !== undefined, `events answered ${page.response.status}`);
  expect(JSON.stringify(page.data.map((e) => e.index)) === "[0,1,2]", "the first page");
  const authorizedEvent = page.data[1].event as { Authorized: { approval_code: string } };
  expect(authorizedEvent.Authorized.approval_code === "xyz123", "an event as sent");
  expect((page.response.headers.get("link") ?? "").includes('rel="next"'), "no Link to the next page");

  console.log("typescript: payment scenario passed");
}

await main();
