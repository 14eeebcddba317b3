# Words of the emails sent to the people named on a connection.

email-details-heading = Details voor uw IT-contactpersoon
