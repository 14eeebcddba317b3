# Words of the pages people see in their browser.

page-health-ok = The service is running.
page-close = You can close this window.
page-back = Back to { $integration }
page-integration-unnamed = the integration
page-what-went-wrong = What went wrong
page-what-to-do = What to do
page-try-again = Try again

## The home page (GET /)

home-title = Connection broker
home-lead = This service connects Twinfield, Exact Online and Acumatica to the software that works with your bookkeeping.
home-how = To connect or reconnect, open the link you received by email or in the integration.

## The connection page: what a connect link shows first

connection-title = { $provider } connection
connection-state-connected = Connected
connection-state-reconnect = Reconnect
connection-state-not-connected = Not connected
connection-heading-connected = { $provider } is connected
connection-heading-reconnect = { $provider } needs to be reconnected
connection-heading-not-connected = { $provider } is not connected
connection-lead-connected = Nothing to do: { $integration } can use { $provider }, and keeps the access up to date on its own.
connection-lead-reconnect = { $integration } cannot use { $provider } until someone with access signs in again and allows it.
connection-lead-not-connected = Connect { $provider } so that { $integration } can work with your bookkeeping. You sign in at { $provider } and allow access; your password is never shared.
connection-why = Why
connection-since = Since { $moment }
connection-details = Connection details
connection-row-name = Connection
connection-row-integration = Integration
connection-row-bound = Connected to
connection-row-authorized-by = Authorized by
connection-row-authorized-at = Authorized on
connection-button-connect = Connect { $provider }
connection-button-reconnect = Reconnect { $provider }
connection-button-again = Authorize again
connection-button-hint = You will be taken to { $provider } to sign in and allow access.
connection-again-hint = Only needed when the integration's support asks for it.
connection-link-spent = This link was already used
connection-link-spent-text = It shows how the connection stands now, but cannot connect it again. If something does not work, use the most recent link you received or ask the integration for a new one.
connection-link-replaced = This link was replaced
connection-link-replaced-text = A newer link replaced this one. Use the most recent link you received: the newest email, or the link the integration shows now.

# Why a connection needs a person (one per reason).
reconnect-why-grant_revoked = { $provider } no longer accepts the authorization: it was revoked or replaced.
reconnect-why-refresh_token_expired = The authorization at { $provider } has expired.
reconnect-why-refresh_token_reused = { $provider } reports that the authorization was used twice, so it no longer works.
reconnect-why-refresh_interrupted = Renewing the access was interrupted and could not be completed.
reconnect-why-legacy_credentials_retired = { $provider } has retired the old way of connecting and now requires the new, safer connection.
reconnect-why-repeated_failures = Renewing the access has failed for too long.
reconnect-why-client_misconfigured = { $provider } rejects the integration's app registration. Contact the integration's support first: reconnecting does not help until they fix it.
reconnect-why-refresh_failing = Renewing the access fails for now. The service keeps trying; reconnecting can solve it sooner.
reconnect-why-disabled = { $provider } has blocked or disabled the organisation or user. Resolve it with { $provider }, then reconnect.
reconnect-why-legacy_credentials = The connection still uses the old way of connecting to { $provider }, which is being retired. Reconnect to switch to the new, safer connection.

# What a connection is bound to at its provider.
bound-twinfield = organisation { $code }
bound-exact = division { $division }
bound-exact-named = division { $division } ({ $name })
bound-acumatica = tenant { $tenant }
bound-generic = account { $account }
bound-generic-unnamed = the authorized account

## After the provider sent the browser back

success-heading-connected = { $provider } is connected
success-heading-reconnected = { $provider } is reconnected
success-next = What happens next: { $integration } can use { $provider } now, and the access is kept up to date on its own (next check { $moment }). If { $provider } ever needs you to authorize again, the people named on the connection get an email with a link.
division-offer = This authorization gives access to { $count } divisions. The connection works in division { $bound } now; choose the one it should work in:
division-button = Use this division
division-chosen-title = Exact Online division chosen
division-chosen-text = The connection works in { $bound }.

## Why an attempt stopped (one per reason), and what to do

failure-title = Could not connect { $provider }
failure-title-unnamed = Could not connect
failure-malformed_request = The request is malformed: { $detail }
failure-link_unknown = This link is not valid (it may have been mistyped or replaced by a newer one)
failure-link_expired = This link has expired
failure-link_spent = This link was already used
failure-link_replaced = A newer link replaced this one
failure-state_unknown = This sign-in attempt is unknown or was already used
failure-state_expired = This sign-in attempt took longer than { $minutes } minutes and expired
failure-wrong_browser = This sign-in attempt was started in another browser
failure-denied = Access was not granted at { $provider }{ $description }
failure-provider_refused = { $provider } refused the authorization ({ $error }){ $description }
failure-provider_error = { $detail }
failure-nonce_unverified = { $provider } sent no id_token, so the sign-in could not be verified
failure-identity_mismatch = { $provider } was authorized by { $actual }, but this connection must be authorized by { $required }
failure-organisation_mismatch = { $provider } authorized { $actual }, but this connection belongs to { $expected }
failure-other_user = { $provider } was authorized by { $actual }, but this connection was authorized by { $expected }
failure-division_not_granted = This authorization does not give access to Exact Online division { $division }, which this connection works in (it gives access to { $granted })
failure-divisions_unknown = Exact Online did not say which divisions this authorization gives access to (division { $division }, open in Exact Online, is not one of them)
failure-division_choice_unknown = This choice of division is unknown or was already made
failure-division_choice_closed = The time to choose a division has passed; the connection works in Exact Online division { $division }
failure-connection_gone = This connection was disconnected and can no longer be connected
failure-conflict = The connection changed while it was being authorized
failure-misconfigured = The integration's app registration is incomplete
failure-unavailable = The service's storage is unavailable
failure-granted-none = no division
failure-granted = { $count ->
    [one] division { $codes }
   *[other] divisions { $codes }
}

todo-start-again-here = Open the connect link you were given again, in the browser you will finish in.
todo-newest-link = Use the most recent link you received (the newest email), or ask the integration for a new one.
todo-new-link = Ask for a new connect link: the integration can issue one, and reminders carry one.
todo-state_expired = Start again from the connect link.
todo-denied = Nothing was changed. To connect, start again and choose to allow access at { $provider }.
todo-app-registration = Nothing was changed. Contact the integration's support: the app registration needs fixing.
todo-retry-later = Nothing was changed. Try again in a few minutes; if it keeps failing, contact the integration's support.
todo-identity_mismatch = Nothing was changed. Sign out of { $provider }, then start again and sign in as the designated integration user, { $required }.
todo-organisation_mismatch = Nothing was changed. Start again and choose { $expected } at { $provider }. To move the integration to another organisation, create a new connection.
todo-other_user = Nothing was changed. Sign out of { $provider }, then start again and sign in as { $expected }. To connect with another user's access, create a new connection.
todo-division_not_granted = Nothing was changed. Start again and, on Exact Online's consent page, include division { $division } among the divisions you give access to (or add it in Exact Online under App privileges, Manage divisions). To work in other divisions instead, create a new connection.
todo-divisions_unknown = Nothing was changed. In Exact Online, open one of the divisions you give this app access to, then start again from the connect link.
todo-division_choice_unknown = Nothing was changed by this request. The connection works in the division chosen first (the integration can see it); to work in another, ask the integration for a new connection that names it.
todo-division_choice_closed = Nothing was changed. To work in another division, ask the integration for a new connection that names it.
todo-connection_gone = Create a new connection in the integration.
todo-try-in-a-minute = Nothing was changed. Try again in a minute.
todo-misconfigured = Contact the integration's support: the app registration needs fixing.

# The settings a connection asks its customer for before authorizing (Acumatica instances).
settings-heading = First, tell us where your Acumatica is
settings-intro = Each company runs its own Acumatica. Fill in where yours is; it is checked before you continue. This is asked once: to change tenants later, contact the integration's support.
settings-instance-url = Instance URL
settings-instance-url-hint = The address you sign in to Acumatica at, for example acme.acumatica.com.
settings-tenant = Tenant ID
settings-tenant-hint = The tenant (company) name you choose when you sign in to Acumatica.
settings-recipients = Email addresses for notifications
settings-recipients-hint = Who hears when the connection needs attention, for example when it must be authorized again. Separate several addresses with commas.
settings-time-zone = Time zone
settings-time-zone-hint = The time zone dates and times are shown in, for example Europe/Amsterdam. Check it is yours.
settings-submit = Save and continue
settings-sign-in-heading = Sign in as the integration user
settings-sign-in = When you connect, sign in to Acumatica with the integration user your company set up for this integration, not with your own account. Signed in as anyone else, the integration will not have the permissions it needs.
settings-sliding-heading = No monthly re-authorization (Acumatica 2024 R1 or later)
settings-sliding-intro = Before 2024 R1, Acumatica asks for a new authorization every 30 days. From 2024 R1 an administrator can turn that off:
settings-sliding-step-1 = In Acumatica, open Connected Applications.
settings-sliding-step-2 = Select the connected application of this integration (its Client ID).
settings-sliding-step-3 = Under Refresh Tokens, set Mode to Sliding Expiration.
settings-sliding-step-4 = Set Sliding Lifetime to 15 days, tick Infinite, and save.
settings-refused-instance-url = The instance URL is not an address the connection can use. Type the https address you sign in to Acumatica at, for example acme.acumatica.com.
settings-refused-instance-silent = No Acumatica answered at that instance URL. Check the address you sign in to Acumatica at and try again.
settings-refused-tenant = Fill in the tenant ID: the tenant (company) name you choose when you sign in to Acumatica.
settings-refused-recipients = Fill in at least one valid email address, for example finance@example.com.
settings-refused-time-zone = That is not a time zone we know. Use a name such as Europe/Amsterdam or America/New_York.
