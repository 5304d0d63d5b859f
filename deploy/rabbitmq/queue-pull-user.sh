#!/usr/bin/env bash
# Give a queue-pull scheme its own RabbitMQ user, which may:
#   read    only its own queue sp.referrals.<endpoint-id>,
#   write   only to the exchange sp.replies, and there only with routing key <endpoint-id>,
#   configure nothing (Signpost declares the topology).
#
#   deploy/rabbitmq/queue-pull-user.sh VHOST ENDPOINT_ID PASSWORD
#
# ENDPOINT_ID is the scheme's Endpoint id in the directory (connectionType queue-pull); the user
# is named after it. Run where rabbitmqctl reaches the broker.
set -euo pipefail
vhost=$1 id=$2 password=$3
if [[ ! $id =~ ^[A-Za-z0-9.-]+$ ]]; then
    echo "queue-pull-user: endpoint id must be letters, digits, '.' or '-'" >&2
    exit 2
fi
quoted=${id//./\\.}
rabbitmqctl -q add_user "$id" "$password" 2>/dev/null || rabbitmqctl -q change_password "$id" "$password"
rabbitmqctl -q set_permissions -p "$vhost" "$id" '^$' '^sp\.replies$' "^sp\\.referrals\\.${quoted}\$"
rabbitmqctl -q set_topic_permissions -p "$vhost" "$id" sp.replies "^${quoted}\$" '^$'
echo "queue-pull user $id: reads sp.referrals.$id, replies to sp.replies with routing key $id"
