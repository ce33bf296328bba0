// A small GraphQL client: queries and mutations over POST, subscriptions over WebSocket with the
// graphql-transport-ws protocol. The session cookie authenticates both.

export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join('; '));
    this.code = errors[0]?.extensions?.code;
  }
}

export async function gql(query, variables = {}) {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors?.length) throw new GraphQLError(body.errors);
  return body.data;
}

// Calls onData for each result; returns a function that stops the subscription.
export function subscribe(query, variables, onData, onError) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  const ws = new WebSocket(url, 'graphql-transport-ws');
  ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  ws.onmessage = (msg) => {
    const m = JSON.parse(msg.data);
    if (m.type === 'connection_ack') {
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
    } else if (m.type === 'next') {
      if (m.payload.errors?.length) onError(new GraphQLError(m.payload.errors));
      else onData(m.payload.data);
    } else if (m.type === 'error') {
      onError(new GraphQLError(m.payload));
    } else if (m.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong' }));
    }
  };
  return () => ws.close();
}
