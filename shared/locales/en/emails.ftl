# Words of the emails sent to the people named on a connection.
# Arguments: $provider (Exact Online), $tenant (who runs the integration), $connection (the connection
# as people know it), $since, $deadline and $until (moments, with their zone), $days (a count).

## Subject lines

email-subject-reconnect = Action needed: reconnect { $provider } for { $tenant }
email-subject-disabled = Action needed: { $provider } disabled the connection for { $tenant }
email-subject-recovered = { $provider } works again for { $tenant }
email-subject-absolute-expiry = { $provider } connection for { $tenant } stops working on { $deadline }
email-subject-absolute-expiry-undated = { $provider } connection for { $tenant } stops working soon
email-subject-idle-expiry = { $provider } connection for { $tenant } is failing and will expire
email-subject-legacy = { $provider } connection for { $tenant } uses retired credentials
email-subject-reminder-reconnect = Reminder: reconnect { $provider } for { $tenant }
email-subject-reminder-disabled = Reminder: { $provider } still refuses the connection for { $tenant }
email-subject-check = Check the { $provider } connection for { $tenant }

## The frame around every email

email-greeting = Hello,
email-about = This is about { $tenant }'s connection to { $connection }.
email-what-heading = What is happening
email-todo-heading = What to do
email-footer = You receive this because your address is named on this connection in { $tenant }.
# Where the tenant's record cannot be found.
email-tenant-unknown = your integration

## What is happening

email-what-reconnect = Since { $since }, { $tenant } can no longer reach { $connection }. { $reason }
email-what-reconnect-reminder = Since { $since } ({ $days ->
        [one] 1 day
       *[other] { $days } days
    } ago), { $tenant } can no longer reach { $connection }. { $reason }
email-what-disabled = Since { $since }, { $provider } refuses { $connection }: it blocked, disabled or deleted the organisation.
email-what-disabled-reminder = Since { $since } ({ $days ->
        [one] 1 day
       *[other] { $days } days
    } ago), { $provider } refuses { $connection }: it blocked, disabled or deleted the organisation.
email-what-recovered = Since { $since }, { $connection } is connected again.
email-what-absolute-expiry = { $provider } ends the authorization of { $connection } on { $deadline }: it lasts a fixed time that refreshing cannot extend.
email-what-absolute-expiry-undated = { $provider } will soon end the authorization of { $connection }: it lasts a fixed time that refreshing cannot extend.
email-what-idle-expiry = Refreshing { $connection } keeps failing. If it cannot be refreshed by { $deadline }, its authorization expires.
email-what-idle-expiry-undated = Refreshing { $connection } keeps failing. If this goes on, its authorization expires.
email-what-legacy = { $connection } still signs in with old-style credentials, which { $provider } is retiring in favour of OAuth 2.0; once they are refused the integration stops.
email-what-check = Since { $since }, { $connection } has needed attention.

## Why a person must reconnect, by the reason the service found

email-reason-grant-revoked = { $provider } no longer accepts this connection's authorization: it was revoked or replaced.
email-reason-refresh-token-expired = The connection's authorization at { $provider } has expired.
email-reason-refresh-token-reused = { $provider } reports that the connection's authorization was already used, so it no longer works.
email-reason-refresh-interrupted = Renewing the authorization was interrupted and { $provider }'s new authorization could not be recovered.
email-reason-legacy-retired = { $provider } retired this connection's old-style credentials and now requires OAuth 2.0.
email-reason-repeated-failures = Renewing the authorization has failed for too long.
email-reason-client-misconfigured = { $provider } refuses the integration's app registration (its client id or secret), or the registration points at an address the service does not call.

## What to do

email-todo-sign-in = Open the link below and sign in to { $provider } to authorize the connection again.
email-todo-sign-in-as = Open the link below and sign in to { $provider } as { $person } to authorize the connection again.
email-todo-disabled = Resolve it with { $provider } first; then open the link below and authorize the connection again.
email-todo-client-misconfigured = Ask whoever manages the integration to check its app registration with { $provider } (client id, secret and addresses); then open the link below and authorize the connection again.
email-todo-recovered = Nothing more to do.
email-todo-absolute-expiry = Reconnect before then to keep the integration running.
email-todo-idle-expiry = To be safe, reconnect now.
email-todo-legacy = Reconnect to move it to OAuth 2.0.
email-hint-acumatica-sliding = On Acumatica 2024 R1 or newer, an administrator can stop this from recurring: on the Connected Applications screen, set this application's refresh tokens to Sliding Expiration with an infinite lifetime.

## The call to action

email-action-reconnect = Reconnect { $provider }
email-action-until = The link works until { $until }. Do not forward this email: anyone with the link can reconnect.

## Details for whoever looks into it technically

email-details-heading = Details for your IT contact
email-details-intro = What { $provider } reported, for whoever looks into this technically:
email-details-message = Message from { $provider }
email-details-connection = Connection
email-details-time = Time

## The connection as people know it: "Exact Online, division 123 (Acme B.V.)"

email-provider-generic = OAuth 2.0 provider
email-context-twinfield = organisation { $code }
email-context-exact = division { $division }
email-context-exact-named = division { $division } ({ $name })
email-context-acumatica = tenant { $tenant }
email-context-generic = account { $account }
email-context-generic-unnamed = the authorized account
